"""What each op saves for backward, side by side with torch 2.13 (its tools/autograd/derivatives.yaml).

torch raises "one of the variables needed for gradient computation has been modified by an inplace
operation" at backward when a tensor an op saved -- an input (``self``, ``other``) or its ``result`` --
was changed in place after the op ran, and computes the gradient when the changed tensor was not saved.
For every differentiable op two experiments run in both libraries: change one input in place (``mul_(1)``:
the values stay, the version moves), or change the output in place, then backward. minilora must raise
where torch raises and give a gradient where torch gives one: a user who learns the rule from minilora
learns torch's rule.
"""
import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)


def _i(L, values):
    return L.tensor(values)


# name: (call(L, F, *inputs), shapes of the float inputs, low, high). The inputs are drawn in [low, high).
OPS = {
    # ---- elementwise, one input
    "neg": (lambda L, F, x: L.neg(x), [(3, 4)]),
    "abs": (lambda L, F, x: L.abs(x), [(3, 4)]),
    "exp": (lambda L, F, x: L.exp(x), [(3, 4)]),
    "exp2": (lambda L, F, x: L.exp2(x), [(3, 4)]),
    "expm1": (lambda L, F, x: L.expm1(x), [(3, 4)]),
    "log": (lambda L, F, x: L.log(x), [(3, 4)], 0.5, 2),
    "log2": (lambda L, F, x: L.log2(x), [(3, 4)], 0.5, 2),
    "log10": (lambda L, F, x: L.log10(x), [(3, 4)], 0.5, 2),
    "log1p": (lambda L, F, x: L.log1p(x), [(3, 4)], 0.5, 2),
    "sqrt": (lambda L, F, x: L.sqrt(x), [(3, 4)], 0.5, 2),
    "rsqrt": (lambda L, F, x: L.rsqrt(x), [(3, 4)], 0.5, 2),
    "reciprocal": (lambda L, F, x: L.reciprocal(x), [(3, 4)], 0.5, 2),
    "square": (lambda L, F, x: L.square(x), [(3, 4)]),
    "sin": (lambda L, F, x: L.sin(x), [(3, 4)]),
    "sinc": (lambda L, F, x: L.sinc(x), [(3, 4)]),
    "linalg.cross": (lambda L, F, x, y: L.linalg.cross(x, y), [(4, 3), (4, 3)]),
    "cos": (lambda L, F, x: L.cos(x), [(3, 4)]),
    "tan": (lambda L, F, x: L.tan(x), [(3, 4)]),
    "asin": (lambda L, F, x: L.asin(x), [(3, 4)], -0.9, 0.9),
    "acos": (lambda L, F, x: L.acos(x), [(3, 4)], -0.9, 0.9),
    "atan": (lambda L, F, x: L.atan(x), [(3, 4)]),
    "sinh": (lambda L, F, x: L.sinh(x), [(3, 4)]),
    "cosh": (lambda L, F, x: L.cosh(x), [(3, 4)]),
    "tanh": (lambda L, F, x: L.tanh(x), [(3, 4)]),
    "asinh": (lambda L, F, x: L.asinh(x), [(3, 4)]),
    "acosh": (lambda L, F, x: L.acosh(x), [(3, 4)], 1.5, 3),
    "atanh": (lambda L, F, x: L.atanh(x), [(3, 4)], -0.9, 0.9),
    "sigmoid": (lambda L, F, x: L.sigmoid(x), [(3, 4)]),
    "erf": (lambda L, F, x: L.erf(x), [(3, 4)]),
    "erfc": (lambda L, F, x: L.erfc(x), [(3, 4)]),
    "erfinv": (lambda L, F, x: L.erfinv(x), [(3, 4)], -0.9, 0.9),
    "lgamma": (lambda L, F, x: L.lgamma(x), [(3, 4)], 0.5, 3),
    "digamma": (lambda L, F, x: L.digamma(x), [(3, 4)], 0.5, 3),
    "polygamma": (lambda L, F, x: L.polygamma(2, x), [(3, 4)], 0.5, 3),
    "i0": (lambda L, F, x: L.i0(x), [(3, 4)]),
    "special.i1": (lambda L, F, x: L.special.i1(x), [(3, 4)]),
    "special.i0e": (lambda L, F, x: L.special.i0e(x), [(3, 4)]),
    "special.i1e": (lambda L, F, x: L.special.i1e(x), [(3, 4)]),
    "special.zeta": (lambda L, F, q: L.special.zeta(2.5, q), [(3, 4)], 0.5, 2),
    "special.ndtri": (lambda L, F, x: L.special.ndtri(x), [(3, 4)], 0.1, 0.9),
    "special.log_ndtr": (lambda L, F, x: L.special.log_ndtr(x), [(3, 4)]),
    "special.erfcx": (lambda L, F, x: L.special.erfcx(x), [(3, 4)]),
    "special.xlog1py": (lambda L, F, x, y: L.special.xlog1py(x, y), [(3, 4), (3, 4)], 0.5, 2),
    "nextafter": (lambda L, F, x, y: L.nextafter(x, y), [(3, 4), (3, 4)]),
    "mvlgamma": (lambda L, F, x: L.mvlgamma(x, 2), [(3, 4)], 1.5, 3),
    "special.entr": (lambda L, F, x: L.special.entr(x), [(3, 4)], 0.5, 2),
    "special.ndtr": (lambda L, F, x: L.special.ndtr(x), [(3, 4)]),
    "renorm": (lambda L, F, x: L.renorm(x, 2, 0, 1.0), [(3, 4)]),
    "diagonal_scatter": (lambda L, F, x, y: L.diagonal_scatter(x, y), [(3, 3), (3,)]),
    "select_scatter": (lambda L, F, x, y: L.select_scatter(x, y, 0, 1), [(3, 4), (4,)]),
    "slice_scatter": (lambda L, F, x, y: L.slice_scatter(x, y, 1, 0, 2), [(3, 4), (3, 2)]),
    "frexp": (lambda L, F, x: L.frexp(x)[0], [(3, 4)]),
    "gradient": (lambda L, F, x: L.gradient(x, dim=1)[0], [(3, 4)]),
    "sign": (lambda L, F, x: L.sign(x), [(3, 4)]),
    "max(0-d, dim)": (lambda L, F, x: x.max(0)[0], [()]),  # (a 0-d tensor's max along dim 0: RecordedCopy)
    "logit": (lambda L, F, x: L.logit(x), [(3, 4)], 0.1, 0.9),
    "logit(eps)": (lambda L, F, x: x.logit(0.2), [(3, 4)], 0.1, 0.9),
    "trunc": (lambda L, F, x: L.trunc(x), [(3, 4)]),
    "round": (lambda L, F, x: L.round(x), [(3, 4)]),
    "nan_to_num": (lambda L, F, x: L.nan_to_num(x), [(3, 4)]),
    "clone": (lambda L, F, x: L.clone(x), [(3, 4)]),
    "to(float32)": (lambda L, F, x: x.to(L.float32), [(3, 4)]),
    "pow(x, 3)": (lambda L, F, x: L.pow(x, 3), [(3, 4)]),
    "pow(x, 1)": (lambda L, F, x: L.pow(x, 1), [(3, 4)]),
    "pow(2, x)": (lambda L, F, x: L.pow(2, x), [(3, 4)]),
    "x ** 0.5": (lambda L, F, x: x ** 0.5, [(3, 4)], 0.5, 2),
    "x * 3": (lambda L, F, x: x * 3, [(3, 4)]),
    "x / 3": (lambda L, F, x: x / 3, [(3, 4)]),
    "3 / x": (lambda L, F, x: 3 / x, [(3, 4)], 0.5, 2),
    "x + 3": (lambda L, F, x: x + 3, [(3, 4)]),
    "3 - x": (lambda L, F, x: 3 - x, [(3, 4)]),
    "clamp(x, -.5, .5)": (lambda L, F, x: L.clamp(x, -0.5, 0.5), [(3, 4)]),
    "clamp(x, min=0)": (lambda L, F, x: L.clamp(x, min=0), [(3, 4)]),
    "relu": (lambda L, F, x: L.relu(x), [(3, 4)]),
    "F.relu6": (lambda L, F, x: F.relu6(x), [(3, 4)], -8, 8),
    "F.hardtanh": (lambda L, F, x: F.hardtanh(x), [(3, 4)]),
    "F.gelu": (lambda L, F, x: F.gelu(x), [(3, 4)]),
    "F.gelu(tanh)": (lambda L, F, x: F.gelu(x, approximate="tanh"), [(3, 4)]),
    "F.silu": (lambda L, F, x: F.silu(x), [(3, 4)]),
    "F.mish": (lambda L, F, x: F.mish(x), [(3, 4)]),
    "F.softplus": (lambda L, F, x: F.softplus(x), [(3, 4)]),
    "F.elu": (lambda L, F, x: F.elu(x), [(3, 4)]),
    "F.celu": (lambda L, F, x: F.celu(x, 0.5), [(3, 4)]),
    "F.selu": (lambda L, F, x: F.selu(x), [(3, 4)]),
    "F.leaky_relu": (lambda L, F, x: F.leaky_relu(x, 0.1), [(3, 4)]),
    "F.hardsigmoid": (lambda L, F, x: F.hardsigmoid(x), [(3, 4)], -4, 4),
    "F.hardswish": (lambda L, F, x: F.hardswish(x), [(3, 4)], -4, 4),
    "F.logsigmoid": (lambda L, F, x: F.logsigmoid(x), [(3, 4)]),
    "F.threshold": (lambda L, F, x: F.threshold(x, 0.1, 2.0), [(3, 4)]),
    "F.softsign": (lambda L, F, x: F.softsign(x), [(3, 4)]),
    "F.tanhshrink": (lambda L, F, x: F.tanhshrink(x), [(3, 4)]),
    "F.dropout(p=0)": (lambda L, F, x: F.dropout(x, 0.0), [(3, 4)]),
    # ---- elementwise, two or three inputs
    "add": (lambda L, F, x, y: L.add(x, y), [(3, 4), (3, 4)]),
    "add(alpha=2)": (lambda L, F, x, y: L.add(x, y, alpha=2), [(3, 4), (3, 4)]),
    "sub": (lambda L, F, x, y: L.sub(x, y), [(3, 4), (4,)]),
    "mul": (lambda L, F, x, y: L.mul(x, y), [(3, 4), (3, 4)]),
    "div": (lambda L, F, x, y: L.div(x, y), [(3, 4), (3, 4)], 0.5, 2),
    "pow(x, y)": (lambda L, F, x, y: L.pow(x, y), [(3, 4), (3, 4)], 0.5, 2),
    "maximum": (lambda L, F, x, y: L.maximum(x, y), [(3, 4), (3, 4)]),
    "minimum": (lambda L, F, x, y: L.minimum(x, y), [(3, 4), (3, 4)]),
    "fmax": (lambda L, F, x, y: L.fmax(x, y), [(3, 4), (3, 4)]),
    "fmin": (lambda L, F, x, y: L.fmin(x, y), [(3, 4), (3, 4)]),
    "atan2": (lambda L, F, x, y: L.atan2(x, y), [(3, 4), (3, 4)]),
    "hypot": (lambda L, F, x, y: L.hypot(x, y), [(3, 4), (3, 4)]),
    "logaddexp": (lambda L, F, x, y: L.logaddexp(x, y), [(3, 4), (3, 4)]),
    "logaddexp2": (lambda L, F, x, y: L.logaddexp2(x, y), [(3, 4), (3, 4)]),
    "xlogy": (lambda L, F, x, y: L.xlogy(x, y), [(3, 4), (3, 4)], 0.5, 2),
    "fmod": (lambda L, F, x, y: L.fmod(x, y), [(3, 4), (3, 4)], 0.5, 2),
    "remainder": (lambda L, F, x, y: L.remainder(x, y), [(3, 4), (3, 4)], 0.5, 2),
    "copysign": (lambda L, F, x, y: L.copysign(x, y), [(3, 4), (3, 4)]),
    "lerp(x, y, 0.3)": (lambda L, F, x, y: L.lerp(x, y, 0.3), [(3, 4), (3, 4)]),
    "lerp(x, y, w)": (lambda L, F, x, y, w: L.lerp(x, y, w), [(3, 4), (3, 4), (3, 4)]),
    "clamp(x, lo, hi)": (lambda L, F, x, lo, hi: L.clamp(x, lo, hi + 1), [(3, 4), (3, 4), (3, 4)]),
    "where": (lambda L, F, x, y: L.where(x > 0, x, y), [(3, 4), (3, 4)]),
    "addcmul": (lambda L, F, x, y, z: L.addcmul(x, y, z, value=0.5), [(3, 4), (3, 4), (3, 4)]),
    "addcmul(float32)": (lambda L, F, x, y, z: L.addcmul(x.float(), y.float(), z.float()), [(3, 4), (3, 4), (3, 4)]),
    "addcdiv": (lambda L, F, x, y, z: L.addcdiv(x, y, z, value=0.5), [(3, 4), (3, 4), (3, 4)], 0.5, 2),
    "F.prelu": (lambda L, F, x, w: F.prelu(x, w), [(2, 3, 4), (3,)]),
    # ---- reductions and scans
    "sum": (lambda L, F, x: L.sum(x), [(3, 4)]),
    "sum(dim)": (lambda L, F, x: x.sum(1), [(3, 4)]),
    "mean": (lambda L, F, x: x.mean(0), [(3, 4)]),
    "prod": (lambda L, F, x: L.prod(x), [(3, 4)]),
    "prod(dim)": (lambda L, F, x: x.prod(1), [(3, 4)]),
    "var": (lambda L, F, x: L.var(x, 1), [(3, 4)]),
    "std": (lambda L, F, x: L.std(x, 1), [(3, 4)]),
    "var_mean": (lambda L, F, x: L.var_mean(x, 1)[1], [(3, 4)]),
    "norm": (lambda L, F, x: L.norm(x), [(3, 4)]),
    "norm(p=1)": (lambda L, F, x: x.norm(p=1), [(3, 4)]),
    "norm(p=3, dim)": (lambda L, F, x: x.norm(p=3, dim=1), [(3, 4)]),
    "amax": (lambda L, F, x: L.amax(x, 1), [(3, 4)]),
    "amin": (lambda L, F, x: L.amin(x, 1), [(3, 4)]),
    "max()": (lambda L, F, x: L.max(x), [(3, 4)]),
    "min()": (lambda L, F, x: x.min(), [(3, 4)]),
    "max(dim)": (lambda L, F, x: L.max(x, 1)[0], [(3, 4)]),
    "min(dim)": (lambda L, F, x: x.min(dim=0).values, [(3, 4)]),
    "median()": (lambda L, F, x: x.median(), [(3, 4)]),
    "median(dim)": (lambda L, F, x: x.median(1)[0], [(3, 4)]),
    "kthvalue": (lambda L, F, x: L.kthvalue(x, 2, 1)[0], [(3, 4)]),
    "sort": (lambda L, F, x: L.sort(x, 1)[0], [(3, 4)]),
    "topk": (lambda L, F, x: L.topk(x, 2)[0], [(3, 4)]),
    "cummax": (lambda L, F, x: L.cummax(x, 1)[0], [(3, 4)]),
    "logsumexp": (lambda L, F, x: L.logsumexp(x, 1), [(3, 4)]),
    "softmax": (lambda L, F, x: L.softmax(x, 1), [(3, 4)]),
    "log_softmax": (lambda L, F, x: L.log_softmax(x, 1), [(3, 4)]),
    "cumsum": (lambda L, F, x: L.cumsum(x, 1), [(3, 4)]),
    "cumprod": (lambda L, F, x: L.cumprod(x, 1), [(3, 4)]),
    "logcumsumexp": (lambda L, F, x: L.logcumsumexp(x, 1), [(3, 4)]),
    "trace": (lambda L, F, x: L.trace(x), [(4, 4)]),
    # ---- shape and indexing
    "reshape": (lambda L, F, x: x.reshape(4, 3), [(3, 4)]),
    "view": (lambda L, F, x: x.view(12), [(3, 4)]),
    "flatten": (lambda L, F, x: x.flatten(), [(3, 4)]),
    "permute": (lambda L, F, x: x.permute(1, 0), [(3, 4)]),
    "t": (lambda L, F, x: x.t(), [(3, 4)]),
    "transpose": (lambda L, F, x: x.transpose(0, 1), [(3, 4)]),
    "unsqueeze": (lambda L, F, x: x.unsqueeze(0), [(3, 4)]),
    "squeeze": (lambda L, F, x: x.squeeze(0), [(1, 4)]),
    "expand": (lambda L, F, x: x.expand(2, 3, 4), [(3, 4)]),
    "x[1]": (lambda L, F, x: x[1], [(3, 4)]),
    "x[:, 1:3]": (lambda L, F, x: x[:, 1:3], [(3, 4)]),
    "x[[0, 2]]": (lambda L, F, x: x[_i(L, [0, 2])], [(3, 4)]),
    "x[mask]": (lambda L, F, x: x[x > 0], [(3, 4)]),
    "narrow": (lambda L, F, x: L.narrow(x, 1, 1, 2), [(3, 4)]),
    "diagonal": (lambda L, F, x: L.diagonal(x), [(4, 4)]),
    "diag_embed": (lambda L, F, x: L.diag_embed(x), [(3, 4)]),
    "tril": (lambda L, F, x: L.tril(x), [(3, 4)]),
    "triu": (lambda L, F, x: L.triu(x), [(3, 4)]),
    "flip": (lambda L, F, x: L.flip(x, (0,)), [(3, 4)]),
    "roll": (lambda L, F, x: L.roll(x, 1, 1), [(3, 4)]),
    "repeat": (lambda L, F, x: x.repeat(2, 1), [(3, 4)]),
    "tile": (lambda L, F, x: L.tile(x, (2,)), [(3, 4)]),
    "repeat_interleave": (lambda L, F, x: L.repeat_interleave(x, 2, 0), [(3, 4)]),
    "Tensor.unfold": (lambda L, F, x: x.unfold(1, 2, 1), [(3, 4)]),
    "cat": (lambda L, F, x, y: L.cat([x, y]), [(3, 4), (2, 4)]),
    "stack": (lambda L, F, x, y: L.stack([x, y]), [(3, 4), (3, 4)]),
    "gather": (lambda L, F, x: L.gather(x, 1, _i(L, [[0, 1], [2, 3], [1, 1]])), [(3, 4)]),
    "take_along_dim": (lambda L, F, x: L.take_along_dim(x, _i(L, [[0], [2], [1]]), 1), [(3, 4)]),
    "index_select": (lambda L, F, x: L.index_select(x, 0, _i(L, [2, 0])), [(3, 4)]),
    "masked_select": (lambda L, F, x: L.masked_select(x, x > 0), [(3, 4)]),
    "masked_fill": (lambda L, F, x: L.masked_fill(x, x > 0, 2.0), [(3, 4)]),
    "index_fill": (lambda L, F, x: L.index_fill(x, 1, _i(L, [0]), 2.0), [(3, 4)]),
    "scatter": (lambda L, F, x, s: L.scatter(x, 1, _i(L, [[0], [2], [1]]), s), [(3, 4), (3, 1)]),
    "scatter(value)": (lambda L, F, x: L.scatter(x, 1, _i(L, [[0], [2], [1]]), 2.0), [(3, 4)]),
    "scatter_add": (lambda L, F, x, s: L.scatter_add(x, 1, _i(L, [[0], [2], [1]]), s), [(3, 4), (3, 1)]),
    "scatter_reduce(amax)": (lambda L, F, x, s: L.scatter_reduce(x, 1, _i(L, [[0, 0], [2, 2], [1, 3]]), s, "amax"),
                             [(3, 4), (3, 2)]),
    "scatter_reduce(prod)": (lambda L, F, x, s: L.scatter_reduce(x, 1, _i(L, [[0, 0], [2, 2], [1, 3]]), s, "prod"),
                             [(3, 4), (3, 2)]),
    "scatter_reduce(mean)": (lambda L, F, x, s: L.scatter_reduce(x, 1, _i(L, [[0, 0], [2, 2], [1, 3]]), s, "mean"),
                             [(3, 4), (3, 2)]),
    "index_add": (lambda L, F, x, s: L.index_add(x, 0, _i(L, [2, 0]), s), [(3, 4), (2, 4)]),
    "index_copy": (lambda L, F, x, s: L.index_copy(x, 0, _i(L, [2, 0]), s), [(3, 4), (2, 4)]),
    "index_put": (lambda L, F, x, s: L.index_put(x, (_i(L, [2, 0]),), s), [(3, 4), (2, 4)]),
    "masked_scatter": (lambda L, F, x, s: L.masked_scatter(x, x > 0, s), [(3, 4), (3, 4)]),
    # ---- matrix products
    "matmul": (lambda L, F, x, y: L.matmul(x, y), [(3, 4), (4, 2)]),
    "mm": (lambda L, F, x, y: L.mm(x, y), [(3, 4), (4, 2)]),
    "bmm": (lambda L, F, x, y: L.bmm(x, y), [(2, 3, 4), (2, 4, 2)]),
    "mv": (lambda L, F, x, y: L.mv(x, y), [(3, 4), (4,)]),
    "dot": (lambda L, F, x, y: L.dot(x, y), [(4,), (4,)]),
    "outer": (lambda L, F, x, y: L.outer(x, y), [(3,), (4,)]),
    "addmm": (lambda L, F, b, x, y: L.addmm(b, x, y), [(3, 2), (3, 4), (4, 2)]),
    "addmm(alpha)": (lambda L, F, b, x, y: L.addmm(b, x, y, beta=0.5, alpha=0.3), [(3, 2), (3, 4), (4, 2)]),
    "addmv": (lambda L, F, b, x, y: L.addmv(b, x, y, alpha=0.3), [(3,), (3, 4), (4,)]),
    "addr": (lambda L, F, b, x, y: L.addr(b, x, y, alpha=0.3), [(3, 4), (3,), (4,)]),
    "baddbmm": (lambda L, F, b, x, y: L.baddbmm(b, x, y, alpha=0.3), [(2, 3, 2), (2, 3, 4), (2, 4, 2)]),
    "einsum": (lambda L, F, x, y: L.einsum("ij,jk->ik", x, y), [(3, 4), (4, 2)]),
    "einsum(empty)": (lambda L, F, x, y: L.einsum("ij,jk->ik", x, y), [(0, 4), (4, 2)]),
    "F.bilinear": (lambda L, F, x, y, w: F.bilinear(x, y, w), [(2, 3), (2, 4), (5, 3, 4)]),
    "igamma": (lambda L, F, x: L.igamma(L.tensor([[1.5], [0.5]], dtype=L.float64), x), [(2, 3)], 0.5, 3),
    "native_dropout(p=0)": (lambda L, F, x: L.native_dropout(x, 0.0, True)[0], [(3, 4)]),
    "segment_reduce": (lambda L, F, x: L.segment_reduce(x, "sum", lengths=L.tensor([1, 2])), [(3, 4)]),
    "F.linear": (lambda L, F, x, w, b: F.linear(x, w, b), [(3, 4), (2, 4), (2,)]),
    "F.linear(no bias)": (lambda L, F, x, w: F.linear(x, w), [(3, 4), (2, 4)]),
    # ---- nn
    "F.layer_norm": (lambda L, F, x, w, b: F.layer_norm(x, (4,), w, b), [(3, 4), (4,), (4,)]),
    "F.rms_norm": (lambda L, F, x, w: F.rms_norm(x, (4,), w), [(3, 4), (4,)]),
    "F.batch_norm(train)": (lambda L, F, x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                            [(4, 3), (3,), (3,)]),
    "F.group_norm": (lambda L, F, x, w, b: F.group_norm(x, 2, w, b), [(2, 4, 3), (4,), (4,)]),
    "F.embedding": (lambda L, F, w: F.embedding(_i(L, [1, 0, 1]), w), [(3, 4)]),
    "F.embedding_bag(mean)": (lambda L, F, w: F.embedding_bag(_i(L, [1, 0, 1, 2]), w, _i(L, [0, 2]), mode="mean"),
                              [(3, 4)]),
    "F.embedding_bag(per_sample_weights)": (lambda L, F, w, p: F.embedding_bag(
        _i(L, [1, 0, 1, 2]), w, _i(L, [0, 2]), mode="sum", per_sample_weights=p), [(3, 4), (4,)]),
    "F.cross_entropy": (lambda L, F, x: F.cross_entropy(x, _i(L, [1, 0, 3])), [(3, 4)]),
    "F.nll_loss": (lambda L, F, x: F.nll_loss(x, _i(L, [1, 0, 3])), [(3, 4)]),
    "F.ctc_loss": (lambda L, F, x: F.ctc_loss(x, _i(L, [[1, 2]]), _i(L, [4]), _i(L, [2])), [(4, 1, 3)]),
    "F.ctc_loss(none)": (lambda L, F, x: F.ctc_loss(x, _i(L, [[1, 2]]), _i(L, [4]), _i(L, [2]), reduction="none"),
                         [(4, 1, 3)]),
    # round 8's ops built from several (one node in torch)
    "F.conv3d": (lambda L, F, x, w, b: F.conv3d(x, w, b), [(1, 2, 3, 3, 3), (2, 2, 2, 2, 2), (2,)]),
    "F.conv_transpose3d": (lambda L, F, x, w: F.conv_transpose3d(x, w, stride=2), [(1, 2, 2, 2, 2), (2, 2, 2, 2, 2)]),
    "F.max_pool3d": (lambda L, F, x: F.max_pool3d(x, 2), [(1, 2, 4, 4, 4)]),
    "F.avg_pool3d": (lambda L, F, x: F.avg_pool3d(x, 2), [(1, 2, 4, 4, 4)]),
    "F.adaptive_avg_pool3d": (lambda L, F, x: F.adaptive_avg_pool3d(x, 2), [(1, 2, 4, 4, 4)]),
    "F.grid_sample": (lambda L, F, x, g: F.grid_sample(x, g, align_corners=False), [(1, 2, 4, 4), (1, 3, 3, 2)],
                      -1, 1),
    "F.grid_sample(3d)": (lambda L, F, x, g: F.grid_sample(x, g, align_corners=True),
                          [(1, 2, 3, 4, 3), (1, 2, 3, 2, 3)], -1, 1),
    "F.pdist": (lambda L, F, x: F.pdist(x), [(4, 3)]),
    "F.mse_loss": (lambda L, F, x, y: F.mse_loss(x, y), [(3, 4), (3, 4)]),
    "F.l1_loss": (lambda L, F, x, y: F.l1_loss(x, y), [(3, 4), (3, 4)]),
    "F.smooth_l1_loss": (lambda L, F, x, y: F.smooth_l1_loss(x, y), [(3, 4), (3, 4)]),
    "F.huber_loss": (lambda L, F, x, y: F.huber_loss(x, y), [(3, 4), (3, 4)]),
    "F.binary_cross_entropy": (lambda L, F, x, y: F.binary_cross_entropy(x, y), [(3, 4), (3, 4)], 0.1, 0.9),
    "F.bce_with_logits": (lambda L, F, x, y: F.binary_cross_entropy_with_logits(x, y), [(3, 4), (3, 4)]),
    "F.kl_div": (lambda L, F, x, y: F.kl_div(x, y, reduction="batchmean"), [(3, 4), (3, 4)], 0.1, 0.9),
    "F.pad": (lambda L, F, x: F.pad(x, (1, 2)), [(3, 4)]),
    "F.pad(reflect)": (lambda L, F, x: F.pad(x, (1, 1), mode="reflect"), [(1, 3, 4)]),
    "F.conv2d": (lambda L, F, x, w, b: F.conv2d(x, w, b), [(1, 2, 4, 4), (3, 2, 2, 2), (3,)]),
    "F.conv1d": (lambda L, F, x, w: F.conv1d(x, w), [(1, 2, 5), (3, 2, 2)]),
    "F.conv_transpose2d": (lambda L, F, x, w: F.conv_transpose2d(x, w), [(1, 2, 3, 3), (2, 3, 2, 2)]),
    "F.max_pool2d": (lambda L, F, x: F.max_pool2d(x, 2), [(1, 2, 4, 4)]),
    "F.avg_pool2d": (lambda L, F, x: F.avg_pool2d(x, 2), [(1, 2, 4, 4)]),
    "F.adaptive_avg_pool2d": (lambda L, F, x: F.adaptive_avg_pool2d(x, 1), [(1, 2, 4, 4)]),
    "F.adaptive_avg_pool2d(2)": (lambda L, F, x: F.adaptive_avg_pool2d(x, 2), [(1, 2, 5, 4)]),  # to 1 is a mean
    "F.adaptive_max_pool2d": (lambda L, F, x: F.adaptive_max_pool2d(x, 1), [(1, 2, 4, 4)]),
    "F.unfold": (lambda L, F, x: F.unfold(x, 2), [(1, 2, 3, 3)]),
    "F.fold": (lambda L, F, x: F.fold(x, (3, 3), 2), [(1, 8, 4)]),
    "F.pixel_shuffle": (lambda L, F, x: F.pixel_shuffle(x, 2), [(1, 4, 2, 2)]),
    "F.interpolate(nearest)": (lambda L, F, x: F.interpolate(x, scale_factor=2), [(1, 2, 3, 3)]),
    "F.interpolate(bilinear)": (lambda L, F, x: F.interpolate(x, scale_factor=2, mode="bilinear"), [(1, 2, 3, 3)]),
    "F.interpolate(bicubic)": (lambda L, F, x: F.interpolate(x, size=(5, 4), mode="bicubic"), [(1, 2, 3, 3)]),
    "F.sdpa": (lambda L, F, q, k, v: F.scaled_dot_product_attention(q, k, v), [(1, 3, 4), (1, 3, 4), (1, 3, 4)]),
    "as_strided": (lambda L, F, x: x.as_strided((2, 2), (1, 3), 1), [(3, 4)]),
    "as_strided_scatter": (lambda L, F, x, y: L.as_strided_scatter(x, y, (2, 2), (1, 3), 1), [(3, 4), (2, 2)]),
    "rot90(0)": (lambda L, F, x: L.rot90(x, 0), [(3, 4)]),  # (RecordedCopy)
    "put(accumulate)": (lambda L, F, x, y: x.put(_i(L, [1, 1]), y, accumulate=True), [(3, 4), (2,)]),  # (GradientPassesTo)
    "F.normalize": (lambda L, F, x: F.normalize(x), [(3, 4)]),
    "F.cosine_similarity": (lambda L, F, x, y: F.cosine_similarity(x, y), [(3, 4), (3, 4)]),
    "cdist": (lambda L, F, x, y: L.cdist(x, y, 1.5), [(3, 4), (5, 4)]),  # (torch's _cdist_forward: x1, x2, result)
    "F.glu": (lambda L, F, x: F.glu(x), [(3, 4)]),
}


def _arrays(name):
    spec = OPS[name]
    low, high = (spec[2], spec[3]) if len(spec) > 2 else (-1.5, 1.5)
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    return [rng.uniform(low, high, shape) for shape in spec[1]]


def _first_float(out):
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out


def _experiment(L, name, changed, alone=False):
    """Run op ``name``, change input ``changed`` (an int) or the output ("out") in place, then backward:
    "ok", "version" (torch's error for a changed saved tensor) or another error's type name. ``alone``:
    only the changed input requires grad (torch saves ``self`` for ``other``'s gradient only when ``other``
    needs one: ``x @ frozen_w`` does not keep ``x``)."""
    F = L.nn.functional
    leaves = [L.tensor(a, requires_grad=not alone or i == changed) for i, a in enumerate(_arrays(name))]
    inputs = [leaf.clone() for leaf in leaves]  # non-leaves, so that they may be changed in place
    try:
        out = _first_float(OPS[name][0](L, F, *inputs))
        (out if changed == "out" else inputs[changed]).mul_(1)
        out.sum().backward()
    except Exception as exc:  # noqa: BLE001  (which error is what is compared)
        if isinstance(exc, RuntimeError) and "modified by an inplace operation" in str(exc):
            return "version"
        return f"{type(exc).__name__}: {str(exc)[:80]}"
    return "ok"


CASES = [(name, changed) for name in OPS for changed in [*range(len(OPS[name][1])), "out"]]


@pytest.mark.parametrize("name, changed", CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_changed_in_place_before_backward_raises_where_torch_does(name, changed):
    theirs = _experiment(torch, name, changed)
    ours = _experiment(ml, name, changed)
    assert ours == theirs, f"{name}: changing {'the output' if changed == 'out' else f'input {changed}'}"


ALONE = [(name, changed) for name in OPS if len(OPS[name][1]) > 1 for changed in range(len(OPS[name][1]))]


@pytest.mark.parametrize("name, changed", ALONE, ids=[f"{n}-{c}" for n, c in ALONE])
def test_what_is_saved_depends_on_which_inputs_need_a_gradient_as_in_torch(name, changed):
    theirs, ours = (_experiment(L, name, changed, alone=True) for L in (torch, ml))
    assert ours == theirs, f"{name}: changing input {changed}, the only one that requires grad"


def test_every_differentiable_op_is_in_the_table():
    """Each Function that ran in the table is one torch has a rule for; the table must keep up with the
    ops: every op Function minilora defines (but the few listed) runs in at least one row."""
    from minilora.tensor import Function
    ran = set()
    original = Function.apply.__func__

    def spy(cls, *inputs, **options):
        ran.add(cls.__name__)
        return original(cls, *inputs, **options)
    Function.apply = classmethod(spy)
    try:
        for name in OPS:
            _experiment(ml, name, "out")
    finally:
        Function.apply = classmethod(original)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)
    defined = {c.__name__ for c in subclasses(Function) if c.__module__.startswith("minilora.ops")}
    missing = defined - ran - NOT_IN_TABLE
    assert not missing, f"add a row to OPS for {sorted(missing)}"


NOT_IN_TABLE = {  # ops without a torch call of their own to compare, or covered by other test files
    "Bgmv", "LoraLinear", "Rotary", "SwiGLU",  # minilora's fused ops (no torch counterpart)
    "BatchNorm16", "BFloat16Huber", "FlashAttention16", "SixteenBitAddc",  # 16-bit paths only
    "FlashAttention32",  # forward only, no gradient wanted (tests/test_sdpa_flash_r28.py compares its bits)
    "KernelValues",  # float32 batch/group norm's kernel bits in the composed formula's place (the table runs float64)
    "KernelGradients",  # float32 batch norm's kernel gradients handed to the composed formula's inputs (likewise)
    "ConvBias",  # float32 conv bias added on torch's oneDNN path, its gradient oneDNN's order (tests/test_cnn_grads_r19.py)
    "ArgMax", "ArgSort", "NonZero", "Logical", "_Test", "Computed", "ComputedLike", "Sign", "_Rounding",
    "_NoDerivative",  # no gradient
    "Resize",  # deprecated x.resize(): torch's is a custom Function whose output is a view, so an in-place change
    # of the input before backward is torch's "Output 0 of Resize is a view..." error; minilora's backward reads
    # nothing saved and goes on (same gradient); tests/test_tensor_methods_r23.py compares its values and memory
    "StandardGamma",  # random draws: tests/test_distributions_r22.py compares its draws and gradients with torch's
    "AsType", "PromotionCast", "ToDevice", "Dropout", "CrossEntropy", "Embedding", "BinaryCrossEntropy", "MaxUnpool2d",
    "MulByScalarTensor", "DivByScalarTensor", "RoundedDiv", "AddScaled", "Attention", "Rotary",
    "ScatterIndexed", "EmbeddingGrad", "LinearPair",  # create_graph=True's backward-of-backward ops (tests/test_double_backward_r8.py)
    "StepScaled",  # (and tests/test_double_backward2_r9.py)
    "DelayedError",  # (and tests/test_double_backward_r10.py)
    "ReadsInputs", "BinaryCrossEntropyGrad",  # (and tests/test_gradgrad_r15.py)
    "GradientPassesTo",  # (and tests/test_gradgrad_r17.py)
    "BothStatistics", "OneStatistic",  # native_group_norm's mean and rstd (tests/test_silent_values_r24.py)
    "EmptyPooling",  # an adaptive pooling to 0 cells: zeros, its backward refuses as torch's (tests/test_extremes4_r31.py)
}


# ---- torch's in-place names: torch.exp_(x), torch.celu_(x), x.logit_(eps), torch.dropout(x, p, train) ----
def _in_place_names(module, cls):
    """torch's ``name_`` functions (top-level or methods) whose ``name`` minilora has."""
    return sorted(n for n in dir(getattr(torch, module) if module else torch)
                  if n.endswith("_") and not n.startswith("_") and hasattr(cls, n[:-1]))


def test_every_in_place_form_of_an_op_minilora_has_exists():
    missing = [n for n in _in_place_names(None, ml) if not hasattr(ml, n)]
    missing += [f"Tensor.{n}" for n in _in_place_names("Tensor", ml.Tensor) if not hasattr(ml.Tensor, n)]
    assert not missing


P = np.random.default_rng(1).uniform(0.05, 0.95, (2, 3))  # a domain every op below takes
TOP_LEVEL_IN_PLACE = {  # call(L, x) of torch's top-level in-place functions, as users write them
    **{n: (lambda n: lambda L, x: getattr(L, n)(x))(n) for n in (
        "abs_ acos_ asin_ asinh_ atan_ atanh_ ceil_ cos_ cosh_ erf_ exp2_ exp_ expm1_ floor_ log10_ log1p_ "
        "log2_ log_ neg_ negative_ reciprocal_ round_ rsqrt_ sin_ sinh_ sqrt_ square_ tan_ trunc_ "
        "nan_to_num_ logit_ zero_ detach_ relu_ sigmoid_ tanh_ selu_").split()},
    "acosh_": lambda L, x: L.acosh_(x.add_(1)),
    "round_(decimals=1)": lambda L, x: L.round_(x, decimals=1),
    "xlogy_": lambda L, x: L.xlogy_(x, x + 1),
    "index_put_": lambda L, x: L.index_put_(x, (L.tensor([1, 0]),), L.tensor(2.0, dtype=x.dtype), True),
    "fill_": lambda L, x: L.fill_(x, 3),
    "logit_(eps)": lambda L, x: L.logit_(x, 0.2),
    "x.logit_(eps=)": lambda L, x: x.logit_(eps=0.3),
    "celu_": lambda L, x: L.celu_(x.sub_(0.5), 0.5),
    "celu_(alpha=)": lambda L, x: L.celu_(x.sub_(0.5), alpha=2.0),
    "threshold_": lambda L, x: L.threshold_(x, 0.5, -1.0),
    "rrelu_": lambda L, x: L.rrelu_(x.sub_(0.5), 0.1, 0.3),
    "rrelu_(training=False)": lambda L, x: L.rrelu_(x.sub_(0.5), lower=0.2, upper=0.4, training=False),
    "dropout_(train=False)": lambda L, x: L.dropout_(x, 0.5, False),
    "dropout_(p=0)": lambda L, x: L.dropout_(x, p=0.0, train=True),
    "dropout_(p=1)": lambda L, x: L.dropout_(x, 1.0, True),
    "alpha_dropout_": lambda L, x: L.alpha_dropout_(x, 0.5, False),
    "feature_alpha_dropout_": lambda L, x: L.feature_alpha_dropout_(x, 0.5, False),
    "x.baddbmm_ (of a view)": lambda L, x: x.view(1, 2, 3).baddbmm_(L.ones(1, 2, 2, dtype=x.dtype) / 4,
                                                                  x.view(1, 2, 3).clone(), beta=0.5, alpha=2),
}


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("name", list(TOP_LEVEL_IN_PLACE))
def test_in_place_functions_write_torchs_values_into_their_input(name, dtype):
    results = []
    for L in (ml, torch):
        x = L.tensor(P).to(getattr(L, dtype))
        y = TOP_LEVEL_IN_PLACE[name](L, x)
        assert y is x or "(of a view)" in name
        results.append((str(x.dtype).split(".")[-1], x.float().numpy()))
    assert results[0][0] == results[1][0] == dtype
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6 if dtype != "bfloat16" else 0, atol=0)


OUT_OF_PLACE = {  # torch's top-level functional names minilora now has too
    "logit": lambda L, x: L.logit(x),
    "logit(eps)": lambda L, x: L.logit(x, 0.25),
    "logit(eps=)": lambda L, x: L.logit(input=x, eps=0.1),
    "x.logit()": lambda L, x: x.logit(),
    "x.logit(eps)": lambda L, x: x.logit(0.3),
    "celu": lambda L, x: L.celu(x - 0.5, alpha=0.5),
    "selu": lambda L, x: L.selu(x - 0.5),
    "threshold": lambda L, x: L.threshold(x, threshold=0.5, value=2.0),
    "rrelu": lambda L, x: L.rrelu(x - 0.5),
    "dropout(train=False)": lambda L, x: L.dropout(x, 0.3, False),
    "dropout(p=0)": lambda L, x: L.dropout(input=x, p=0.0, train=True),
    "alpha_dropout": lambda L, x: L.alpha_dropout(x, p=0.2, train=False),
    "feature_alpha_dropout": lambda L, x: L.feature_alpha_dropout(x, 0.2, False),
}


@pytest.mark.parametrize("name", list(OUT_OF_PLACE))
def test_functional_names_give_torchs_values_and_gradients(name):
    results = []
    for L in (ml, torch):
        leaf = L.tensor(np.concatenate([P.ravel(), [0.0, 1.0, 0.1, 0.9, 0.25]]), requires_grad=True)
        out = OUT_OF_PLACE[name](L, leaf)
        out.sum().backward()
        results.append((out.detach().numpy(), leaf.grad.numpy()))
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16", "int64"])
def test_logit_values_as_torch_in_every_dtype(dtype):
    values = np.concatenate([np.linspace(-0.2, 1.2, 57), [0.0, 1.0, np.nan]])
    if dtype == "int64":
        values = np.array([-1, 0, 1, 2])
    for eps in (None, 0.1, 0.25):
        ours, theirs = (L.logit(L.tensor(values).to(getattr(L, dtype)), eps) for L in (ml, torch))
        assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
        if dtype == "float32":  # torch: SLEEF's logf in the vectorized body, C's logf in the tail;
            # minilora's float32 log is correctly rounded (float32_math): within 1 ulp, equal on most
            np.testing.assert_array_max_ulp(ours.numpy(), theirs.numpy(), maxulp=1)
            assert np.mean((ours.numpy() == theirs.numpy()) | np.isnan(theirs.numpy())) > 0.9
        else:
            np.testing.assert_array_equal(ours.float().numpy(), theirs.float().numpy())


def test_logit_saves_its_input_as_torch():
    for L in (ml, torch):
        x = L.tensor(P, requires_grad=True).clone()
        y = L.logit(x, 0.1)
        x.mul_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


# ---- grad_fn._saved_self / _saved_other / _saved_result, as torch's saved-tensors tutorial reads them ----
def _saved_attributes(L):
    a, b = L.randn(5, requires_grad=True), L.ones(5, requires_grad=True)
    x = L.randn(5, requires_grad=True)
    product, square, exp, largest, total = a * b, x.pow(2), L.exp(x), x.amax(), x + 1
    seen = [product.grad_fn._saved_self is a, product.grad_fn._saved_other is b,
            square.grad_fn._saved_self is x, exp.grad_fn._saved_result is exp,
            bool(exp.grad_fn._saved_result.equal(exp)), type(exp.grad_fn._saved_result.grad_fn).__name__,
            bool(largest.grad_fn._saved_result.equal(largest)), largest.grad_fn._saved_self is x]
    for node, name in ((total.grad_fn, "_saved_self"), (exp.grad_fn, "_saved_self")):
        with pytest.raises(AttributeError, match=f"object has no attribute '{name}'"):
            getattr(node, name)
    exp.sum().backward()
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        exp.grad_fn._saved_result
    return seen


def test_saved_tensors_on_the_node_as_torch():
    ours, theirs = _saved_attributes(ml), _saved_attributes(torch)
    assert ours == theirs == [True, True, True, False, True, "ExpBackward0", True, True]  # (its class: torch's name)


# ---- in-place ops: what x.exp_() (its result), x.mul_(y) (y, and x's old values: a copy) ... keep ----------
# (torch has no derivative for asinh_ / atanh_ -- NotImplementedError at backward; minilora computes one)
ARRAYS = [np.random.default_rng(2).uniform(0.2, 0.8, (3, 4)) for _ in range(3)]
IN_PLACE_OPS = {  # x.op_(...) with y, z the other operands, as users write them
    **{n: (lambda n: lambda L, x, y, z: getattr(x, n)())(n) for n in (
        "exp_ sigmoid_ tanh_ relu_ sqrt_ rsqrt_ reciprocal_ sin_ cos_ tan_ log_ abs_ neg_ square_ exp2_ expm1_ "
        "log1p_ asin_ acos_ atan_ erf_ sinh_ cosh_ logit_ nan_to_num_ log2_ log10_ trunc_").split()},
    "pow_(2)": lambda L, x, y, z: x.pow_(2),
    "pow_(y)": lambda L, x, y, z: x.pow_(y),
    "mul_": lambda L, x, y, z: x.mul_(y),
    "div_": lambda L, x, y, z: x.div_(y),
    "add_": lambda L, x, y, z: x.add_(y),
    "sub_(alpha)": lambda L, x, y, z: x.sub_(y, alpha=2),
    "clamp_": lambda L, x, y, z: x.clamp_(0.3, 0.6),
    "clamp_(tensors)": lambda L, x, y, z: x.clamp_(y * 0.5, y + 0.1),
    "lerp_(number)": lambda L, x, y, z: x.lerp_(y, 0.3),
    "lerp_(tensor)": lambda L, x, y, z: x.lerp_(y, z),
    "addcmul_": lambda L, x, y, z: x.addcmul_(y, z),
    "addcdiv_": lambda L, x, y, z: x.addcdiv_(y, z),
    "F.hardtanh_": lambda L, x, y, z: L.nn.functional.hardtanh_(x),
    "F.leaky_relu_": lambda L, x, y, z: L.nn.functional.leaky_relu_(x),
    "F.elu_": lambda L, x, y, z: L.nn.functional.elu_(x),
    "F.celu_": lambda L, x, y, z: L.nn.functional.celu_(x),
    "F.selu_": lambda L, x, y, z: L.nn.functional.selu_(x),
    "F.silu(inplace)": lambda L, x, y, z: L.nn.functional.silu(x, inplace=True),
    "F.mish(inplace)": lambda L, x, y, z: L.nn.functional.mish(x, inplace=True),
    "F.hardsigmoid(inplace)": lambda L, x, y, z: L.nn.functional.hardsigmoid(x, inplace=True),
    "F.hardswish(inplace)": lambda L, x, y, z: L.nn.functional.hardswish(x, inplace=True),
    "F.threshold_": lambda L, x, y, z: L.nn.functional.threshold_(x, 0.5, 0.0),
    "F.relu6(inplace)": lambda L, x, y, z: L.nn.functional.relu6(x, inplace=True),
    "atan2_": lambda L, x, y, z: x.atan2_(y),
    "hypot_": lambda L, x, y, z: x.hypot_(y),
    "xlogy_": lambda L, x, y, z: x.xlogy_(y),
    "copysign_": lambda L, x, y, z: x.copysign_(y),
    "fmod_": lambda L, x, y, z: x.fmod_(y),
    "remainder_": lambda L, x, y, z: x.remainder_(y),
    "masked_fill_": lambda L, x, y, z: x.masked_fill_(y > 0.5, 0.0),
    "masked_scatter_": lambda L, x, y, z: x.masked_scatter_(z > 0.5, y),
    "index_add_": lambda L, x, y, z: x.index_add_(0, L.tensor([2, 0]), y[:2]),
    "index_copy_": lambda L, x, y, z: x.index_copy_(0, L.tensor([2, 0]), y[:2]),
    "scatter_": lambda L, x, y, z: x.scatter_(1, L.tensor([[0], [2], [1]]), y[:, :1]),
    "cumsum_": lambda L, x, y, z: x.cumsum_(1),
    "cumprod_": lambda L, x, y, z: x.cumprod_(1),
    "tril_": lambda L, x, y, z: x.tril_(),
    "addmm_": lambda L, x, y, z: x.addmm_(y, L.ones(4, 4, dtype=x.dtype)),
}


def _in_place_experiment(L, name, change):
    """x.op_(y, z), then ``change`` (x, y or z) changed in place again, then backward."""
    x, y, z = (L.tensor(a, requires_grad=True).clone() for a in ARRAYS)
    try:
        out = IN_PLACE_OPS[name](L, x, y, z)
        {"self": x, "other": y, "third": z}[change].mul_(1)
        (out * 1).sum().backward()
    except Exception as exc:  # noqa: BLE001
        if isinstance(exc, RuntimeError) and "modified by an inplace operation" in str(exc):
            return "version"
        return f"{type(exc).__name__}: {str(exc)[:80]}"
    return "ok"


@pytest.mark.parametrize("change", ["self", "other", "third"])
@pytest.mark.parametrize("name", list(IN_PLACE_OPS))
def test_in_place_ops_save_as_torch(name, change):
    assert _in_place_experiment(ml, name, change) == _in_place_experiment(torch, name, change)
