"""Higher-order gradients: the backward pass of ``create_graph=True``, recorded as a graph of its own.

The ordinary engine (tensor.py's ``_run_backward``) runs each node's ``backward`` on raw arrays and
records nothing: fast, and all a training step needs. ``grad(..., create_graph=True)`` (gradient
penalties, Hessian-vector products, MAML, d2u/dx2) needs the gradients as tensors *with* a graph, so
it runs this second engine instead: the same walk over the nodes, but each node's gradient comes from
its op's ``backward_graph(ctx, g)``, written with minilora's own ops on the node's input tensors
(``ctx.inputs``), so every step of it is recorded. The normal path gains no work at all.

``backward_graph`` reads only shapes and options from what forward saved, never a saved array that
depends on an input (``exp``'s output, ``relu``'s result): as a constant it would cut the second
derivative. Masks (``relu``'s, ``abs``'s sign) are constants in torch too. An op without one refuses
with its name (NotDifferentiableBackward): never a silently wrong second derivative.
"""
import math
import threading
import warnings

import numpy as np

from .. import linalg as _la, tensor as _t
from ..factories import no_derivative_error
from ..tensor import Function, Tensor, _check_versions, enable_grad
from . import elementwise as _e, extra as _x, incomplete_gamma as _ig, reduce as _r, shape as _s, special as _sp
from .lora import LoraLinear, _dropout_multipliers as _lora_dropout_multipliers
from .matmul import Cross, Einsum, Linear, MatMul, Trilinear, trilinear, trilinear_gradients
from .bags import DenseBagGradient
from .ctc import CTCLoss
from .sampling import GridSampleBilinear2d, GridSampleTrilinear3d
from .conv_mm import SlowConv2d, SlowConvTranspose2d
from .conv import (AdaptiveAvgPool2d, AdaptiveAvgPool3d, AdaptiveMaxPool2d, AvgPool2d, AvgPool3d, Conv2d, ConvBias,
                   ConvTranspose2d, CubicResize, Fold, LinearResize, MaxPool2d, MaxUnpool2d, NearestResize, Unfold,
                   _windows)
from .index import (CumProd, CumSum, Gather, IndexAdd, IndexCopy, IndexFill, IndexSelect, MaskedScatter, MedianAll,
                    Repeat, Scatter, ScatterReduce)
from .siblings import Nextafter
from .attention32 import FlashAttention32
from .nn import (Attention, BinaryCrossEntropy, BinaryCrossEntropyLoss, BinaryCrossEntropyWithLogits, Cdist, CrossEntropy,
                 Dropout, Embedding, Glu, HuberLoss, KernelGradients, LayerNorm, MseLoss, NllLoss, Pad, PRelu, RMSNorm,
                 Rotary, SmoothL1Loss, SwiGLU)


class NotDifferentiableBackward(NotImplementedError):
    """An op on the way has no ``backward_graph``: its gradient cannot be differentiated again."""


def _constant(array, like):
    """``array`` as a tensor outside the graph, on ``like``'s device (a mask, a sign, a one-hot)."""
    return Tensor._make(array, like._device, False, None)


def sum_to(g, shape):
    """``g`` summed down to ``shape`` (the inverse of broadcasting ``shape`` up to ``g.shape``)."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axes, keepdim=True) if axes else g


def _shape(x):
    return tuple(x.shape) if isinstance(x, Tensor) else ()


# ---- each op's backward with ops: (ctx, g) -> one gradient (or None) per positional input ----------
def _add(ctx, g):
    na, nb = ctx.needs_input_grad
    return (sum_to(g, ctx.shapes[0]) if na else None, sum_to(g, ctx.shapes[1]) if nb else None)


def _sub(ctx, g):
    na, nb = ctx.needs_input_grad
    return (sum_to(g, ctx.shapes[0]) if na else None, sum_to(-g, ctx.shapes[1]) if nb else None)


def _mul(ctx, g):
    (a, b), (na, nb) = ctx.inputs, ctx.needs_input_grad
    return (sum_to(g * b, _shape(a)) if na else None, sum_to(g * a, _shape(b)) if nb else None)


def _div(ctx, g):
    (a, b), (na, nb) = ctx.inputs, ctx.needs_input_grad
    return (sum_to(g / b, _shape(a)) if na else None,
            sum_to(-g * a / (b * b), _shape(b)) if nb else None)


def _pow(ctx, g):
    """torch's pow_backward: no gradient through a zero exponent, none to the exponent where the base
    is 0 and the exponent >= 0 (the masks are constants, as torch's)."""
    (a, b), (na, nb) = ctx.inputs, ctx.needs_input_grad
    ga = gb = None
    if na:
        ga = g * b * a ** (b - 1)
        if isinstance(b, Tensor):
            ga = ga * _constant((b._array != 0).astype(ga._array.dtype), ga)
        elif b == 0:
            ga = ga * 0.0
        ga = sum_to(ga, _shape(a))
    if nb:
        if isinstance(a, Tensor):
            keep = ~((a._array == 0) & (np.asarray(b._array) >= 0))
            gb = g * (a ** b) * a.log() * _constant(keep.astype(g._array.dtype), g)
        else:  # a number to a tensor power
            gb = g * (a ** b) * float(np.log(a)) if a != 0 else g * _constant((b._array < 0) * np.nan, g)
        gb = sum_to(gb, _shape(b))
    return ga, gb


def _masked(g, mask):
    """``g`` where ``mask`` (an array) holds, 0 elsewhere: +0 (torch's where and masked_fill in its formulas), not
    g * 0 (-0.0 for a negative g, NaN for an infinite one). A mask of numbers (shares) multiplies."""
    if mask.dtype != np.bool_:
        return g * _constant(mask.astype(g._array.dtype), g)
    return _e.Where.apply(mask, g, g._array.dtype.type(0))


class StepScaled(Function):
    """``g * factor``, where ``factor`` (an array) is a step function of the op's input ``x`` (relu's
    mask, abs's sign, leaky_relu's slopes). Its derivative in ``x`` is 0, but torch's formula reads ``x``
    (threshold_backward(grad, result, 0), grad * self.sgn()), so torch's graph reaches ``x``: a second
    gradient there is zeros, where a constant factor would make it 'not used in the graph'."""

    @staticmethod
    def forward(ctx, g, x, factor):
        ctx.factor = factor
        return _scaled(g, factor)

    @staticmethod
    def backward(ctx, gg):
        need_g, need_x = ctx.needs_input_grad[:2]
        return (_scaled(gg, ctx.factor) if need_g else None), (_e.xp_of(gg).zeros_like(ctx.inputs[1]._array)
                                                                if need_x else None), None

    @staticmethod
    def backward_graph(ctx, gg):
        x = ctx.inputs[1]
        return StepScaled.apply(gg, x, ctx.factor), _constant(gg._device.xp.zeros_like(x._array), gg), None


def _scaled(g, factor):
    """``g * factor``; a boolean factor (relu's mask) selects, as torch's threshold_backward: +0 where it is False."""
    if factor.dtype == np.bool_:
        return _e.xp_of(g).where(factor, g, g.dtype.type(0))
    return g * factor


def _step_scaled(g, x, factor):
    return StepScaled.apply(g, x, factor if factor.dtype == np.bool_ else factor.astype(g._array.dtype, copy=False))


def _abs(ctx, g):
    """abs_backward: grad * sgn(x). A real x: its sign, a step function (StepScaled); a complex z: z / |z|
    (0 at 0), smooth, so recorded with ops: a second derivative goes through it."""
    x = ctx.inputs[0]
    if x.dtype.kind != "c":
        return _step_scaled(g, x, _e._torch_sign(ctx.a))
    zero = ctx.a == 0
    magnitude = x.abs() + _constant(zero.astype(g._array.dtype), g)  # (1 where z = 0: no 0 / 0)
    return _masked(g, ~zero) * (x / magnitude)


def _gelu(ctx, g):
    (a,) = ctx.inputs[:1]
    if ctx.approximate == "tanh":
        k = float(np.sqrt(2 / np.pi))
        t = (k * (a + 0.044715 * a * a * a)).tanh()
        inner = k * (1 + 3 * 0.044715 * a * a)
        return g * (0.5 * (1 + t) + 0.5 * a * (1 - t * t) * inner), None
    cdf = 0.5 * (1 + (a * float(1 / np.sqrt(2))).erf())
    pdf = (-0.5 * a * a).exp() * float(1 / np.sqrt(2 * np.pi))
    return g * (cdf + a * pdf), None


def _silu(ctx, g):
    a = ctx.inputs[0]
    s = a.sigmoid()
    return g * s * (1 + a * (1 - s))


def _softplus(ctx, g):
    a = ctx.inputs[0]
    past = ctx.a * ctx.beta > ctx.threshold  # the linear part: gradient 1 (a constant mask, as torch's)
    s = (a * ctx.beta).sigmoid()
    return _masked(g, past) + _masked(g * s, ~past), None, None


def _leaky_relu(ctx, g):
    return _step_scaled(g, ctx.inputs[0], np.where(ctx.positive, 1.0, ctx.slope)), None


def _sum(ctx, g):
    if not ctx.keepdims:
        for ax in ctx.axes:
            g = g.unsqueeze(ax)
    return g.expand(*ctx.shape)


def _mean(ctx, g):
    return _sum(ctx, g) * (1.0 / ctx.count if ctx.count else float("nan"))


def _softmax(ctx, g):
    axis = _softmax_axis(ctx)
    p = ctx.inputs[0].softmax(axis)
    return p * (g - (g * p).sum(axis, keepdim=True))


def _safe_softmax(ctx, g):
    """torch's _safe_softmax: softmax's formula on its zeroed rows (``ops.reduce.SafeSoftmax``)."""
    p = _r._safe_softmax(ctx.inputs[0], _softmax_axis(ctx))
    return p * (g - (g * p).sum(_softmax_axis(ctx), keepdim=True))


def _log_softmax(ctx, g):
    axis = _softmax_axis(ctx)
    p = ctx.inputs[0].softmax(axis)
    return g - p * g.sum(axis, keepdim=True)


def _softmax_axis(ctx):
    """The forward's axis; a 0-d input's forward has none (torch's dim 0 or -1 of a scalar)."""
    return 0 if ctx.axis is None else ctx.axis


_SQUEEZES = frozenset({"SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2"})


def _reshape(ctx, g):
    """g in the input's shape; a squeeze that dropped no dimension hands g on as it is (torch's
    unsqueeze_to: nothing to put back), where a view's reshape is a node."""
    if ctx.node_name in _SQUEEZES and tuple(g.shape) == ctx.shape:
        return g, None
    return g.reshape(ctx.shape), None


def _expand(ctx, g):
    """torch's at::sum_to(grad, self's sizes): a 0-d input's gradient is grad.sum() (a node) even where
    the expansion kept it 0-d; otherwise only the broadcast dims are summed."""
    return (g.sum() if ctx.shape == () else sum_to(g, ctx.shape)), None


def _permute(ctx, g):
    return g.permute(np.argsort(ctx.axes).tolist())  # (a list: a 0-d tensor's permutation is [])


def _cat(ctx, g):
    bounds = np.concatenate([[0], np.cumsum(ctx.sizes)]).tolist()
    axis = ctx.axis % g.ndim
    return tuple(g[(slice(None),) * axis + (slice(start, stop),)] for start, stop in zip(bounds, bounds[1:]))


class ScatterIndexed(Function):
    """GetItem's backward as an op: ``g`` put at ``index`` of zeros of ``shape`` (repeated indices
    add up). Its own gradient is ``g[index]`` again, so every order of derivative is recorded."""
    complex_grad = True  # (a placement: linear with real coefficients, as GetItem)

    @staticmethod
    def forward(ctx, g, getitem_ctx):
        ctx.index = getitem_ctx.index
        return _s.GetItem.backward(getitem_ctx, g)

    @staticmethod
    def backward(ctx, g):
        return _s.take_indexed(g, ctx.index), None

    @staticmethod
    def backward_graph(ctx, g):
        return _s.GetItem.apply(g, ctx.index), None


def _getitem(ctx, g):
    return ScatterIndexed.apply(g, ctx), None


class _Placement:
    """Where a linear op's input elements went (``shape`` of the input, ``index`` into it): what
    ScatterIndexed reads, for ops that keep them under other names."""

    def __init__(self, shape, index):
        self.shape, self.index = shape, index


def _gather(ctx, g):  # (ctx.index: a full advanced index into the input)
    return ScatterIndexed.apply(g, _Placement(ctx.shape, ctx.index)), None, None


def _index_select(ctx, g):
    return ScatterIndexed.apply(g, _Placement(ctx.shape, ctx.where)), None, None


def _pad(ctx, g):
    """The gradient is the input's region cropped out of g (zeros where padding cropped the input)."""
    return ScatterIndexed.apply(g[ctx.dst], _Placement(ctx.shape, ctx.src)), None, None


def _cumsum(ctx, g):
    """Each input feeds every later output: a reversed cumulative sum. torch's cumsum_backward hands the
    gradient on as it is where there is nothing to sum (one element, or a dim of size 1)."""
    if g.numel() <= 1 or g.shape[ctx.axis] == 1:
        return g, None
    return g.flip(ctx.axis).cumsum(ctx.axis).flip(ctx.axis), None


def _unfold(ctx, g):
    size, kernel, stride, padding, dilation, _ = ctx.geometry
    return Fold.apply(g, size=size, kernel=kernel, stride=stride, padding=padding, dilation=dilation)


def _fold(ctx, g):
    kernel, stride, padding, dilation = ctx.geometry
    return Unfold.apply(g, kernel=kernel, stride=stride, padding=padding, dilation=dilation)


def _conv2d(ctx, g):
    """A convolution is a matrix product with the input's blocks (unfold): ``out = W @ cols``, so
    ``dW = sum_n g @ cols^T`` and ``dx = fold(W^T @ g)``, with ops, group by group."""
    x, w = ctx.inputs[:2]
    _, stride, dilation, padding = ctx.geometry
    groups, (nx, nw) = ctx.weight.shape[0], ctx.needs_input_grad[:2]
    (n, c), o, kernel = x.shape[:2], w.shape[0], tuple(w.shape[2:])
    cg, og = c // groups, o // groups
    g2 = g.reshape(n, o, -1)
    gxs, gws = [], []
    for k in range(groups):
        xk, wk, gk = x[:, k * cg:(k + 1) * cg], w[k * og:(k + 1) * og], g2[:, k * og:(k + 1) * og]
        if nw:
            cols = Unfold.apply(xk, kernel=kernel, stride=stride, padding=padding, dilation=dilation)
            gws.append(gk.matmul(cols.transpose(1, 2)).sum(0).reshape(wk.shape))
        if nx:
            gxs.append(Fold.apply(wk.reshape(og, -1).transpose(0, 1).matmul(gk), size=tuple(x.shape[2:]),
                                  kernel=kernel, stride=stride, padding=padding, dilation=dilation))
    return (_joined(gxs, 1) if nx else None), (_joined(gws, 0) if nw else None)


def _slow_conv2d(ctx, g):
    """conv_mm's convolution (the bias inside): _conv2d's formula, and the bias's sum."""
    gx, gw = _conv2d(ctx, g)
    return gx, gw, (g.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None)


def _slow_conv_transpose2d(ctx, g):
    """conv_mm's transposed convolution (the bias inside): _conv_transpose2d's formula, and the bias's sum."""
    gx, gw = _conv_transpose2d(ctx, g)
    return gx, gw, (g.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None)


def _joined(parts, axis):
    return parts[0] if len(parts) == 1 else _s.Cat.apply(*parts, axis=axis)


def _matmul(ctx, g):
    (a, b), (na, nb) = ctx.inputs, ctx.needs_input_grad
    a2 = a.unsqueeze(0) if a.ndim == 1 else a  # a 1-D operand is a matrix with a dropped size-1 axis
    b2 = b.unsqueeze(-1) if b.ndim == 1 else b
    if b.ndim == 1:
        g = g.unsqueeze(-1)
    if a.ndim == 1:
        g = g.unsqueeze(-2)
    ga = sum_to(g.matmul(b2.transpose(-1, -2)), a2.shape).reshape(a.shape) if na else None
    gb = sum_to(a2.transpose(-1, -2).matmul(g), b2.shape).reshape(b.shape) if nb else None
    return ga, gb


def _linear(ctx, g):
    x, w = ctx.inputs[:2]
    nx, nw, nb = ctx.needs_input_grad
    g2 = g.reshape(-1, g.shape[-1])
    gx = g.matmul(w) if nx else None
    gw = g2.transpose(0, 1).matmul(x.reshape(-1, x.shape[-1])) if nw else None
    gb = g2.sum(0) if nb else None
    return gx, gw, gb


def _cross_entropy(ctx, g):
    """``(softmax(logits) - onehot) * weight_of_row * g / divisor``: the probabilities recomputed with ops."""
    logits = ctx.inputs[0]
    if ctx.reduction == "mean" and ctx.divisor == 0 or logits._array.size == 0:  # no counted weight: a
        return _constant(ctx.fn.backward(ctx, g._array)[0], g), None  # gradient that is no function of logits
    onehot = np.zeros(logits.shape, dtype=logits._array.dtype)
    onehot[np.arange(len(ctx.targets)), ctx.targets] = 1
    valid = _constant(np.asarray(ctx.valid, dtype=logits._array.dtype)[:, None], g)
    rows = g.unsqueeze(1) if ctx.reduction == "none" else g
    divisor = ctx.divisor if ctx.reduction == "mean" else 1
    return (logits.softmax(1) - _constant(onehot, g)) * valid * rows / float(divisor), None


def _layer_norm(ctx, g):
    """With ``n`` the normalised rows, ``r = 1/sqrt(var + eps)`` and ``gw = g * w``:
    ``dx = r * (gw - mean(gw) - n * mean(gw * n))``, ``dw = sum(g * n)``, ``db = sum(g)`` (all with ops)."""
    x, w = ctx.inputs[:2]
    nx, nw, nb = ctx.needs_input_grad
    width = ctx.normed.shape[1]
    x2, g2 = x.reshape(-1, width), g.reshape(-1, width)
    centred = x2 - x2.mean(-1, keepdim=True)
    r = ((centred * centred).mean(-1, keepdim=True) + ctx.eps).rsqrt()
    n = centred * r
    gw = g2 * w.reshape(width) if w is not None else g2
    gx = (r * (gw - gw.mean(-1, keepdim=True) - n * (gw * n).mean(-1, keepdim=True))).reshape(x.shape) if nx else None
    gweight = (g2 * n).sum(0).reshape(ctx.weight_shape) if nw else None
    gbias = g2.sum(0).reshape(ctx.weight_shape) if nb else None
    return gx, gweight, gbias


def _where(ctx, g):
    _, na, nb = ctx.needs_input_grad
    return (None, sum_to(_masked(g, ctx.cond), ctx.shapes[0]) if na else None,
            sum_to(_masked(g, ~ctx.cond), ctx.shapes[1]) if nb else None)


def _maximum(ctx, g):
    """The first-order backward's formula with ops: half of g each at a tie, +0 to the loser (all of g to both at a
    NaN, where neither wins nor ties)."""
    na, nb = ctx.needs_input_grad
    shared = g * _constant(g._device.xp.where(ctx.tie, 0.5, 1.0).astype(g._array.dtype), g)
    return (sum_to(_masked(shared, ~ctx.b_wins), ctx.shapes[0]) if na else None,
            sum_to(_masked(shared, ~ctx.a_wins), ctx.shapes[1]) if nb else None)


def _clamp(ctx, g):
    na, nl, nh = ctx.needs_input_grad
    inside = g._device.xp.broadcast_to(ctx.inside, tuple(g.shape))
    return (sum_to(_masked(g, inside), ctx.shapes[0]) if na else None,
            sum_to(_masked(g, ctx.low_wins), ctx.shapes[1]) if nl else None,
            sum_to(_masked(g, ctx.high_wins), ctx.shapes[2]) if nh else None)


def _elu(ctx, g):
    a = ctx.inputs[0]
    alpha, scale, input_scale = ctx.constants
    positive = ctx.a > 0
    negative = g * (alpha * scale * input_scale) * (a.clamp(max=0) * input_scale).exp()
    return _masked(g * scale, positive) + _masked(negative, ~positive), None, None, None


def _expanded(ctx, g):
    """``g`` with a reduction's axes back as size-1 axes (what broadcasts over the input)."""
    if not ctx.keepdims:
        for ax in ctx.axes:
            g = g.unsqueeze(ax)
    return g


def _logsumexp(ctx, g):
    a = ctx.inputs[0]
    return _expanded(ctx, g) * (a - _r.LogSumExp.apply(a, axis=ctx.axes, keepdims=True)).exp()


def _var(ctx, g):
    a = ctx.inputs[0]
    g = _expanded(ctx, g)
    centred = a - a.mean(ctx.axes, keepdim=True)
    scale = 2.0 / ctx.denom if ctx.denom else float("nan")
    if ctx.std is not None:  # std: d var / (2 std), 0 where std is 0 (a constant mask, as torch's)
        std = ((centred * centred).sum(ctx.axes, keepdim=True) / float(ctx.denom)).sqrt()
        zero = g._device.xp.broadcast_to(ctx.std == 0, tuple(std.shape))
        g = _masked(g / (2 * (std + _constant(zero.astype(std._array.dtype), std))), ~zero)
    return g * centred * scale


def _amax(ctx, g):
    ties = ctx.is_max.sum(axis=ctx.axes, keepdims=True)
    shares = _expanded(ctx, g) * _constant((1 / ties).astype(g._array.dtype), g)
    if ctx.nan_shares:  # (max()/min(): zeros filled where picked, as the first-order backward)
        return _masked(shares, ctx.is_max)
    return shares * _constant(ctx.is_max.astype(g._array.dtype), g)


def _pnorm(ctx, g):
    """sign(a) |a|^(p-1) g / norm^(p-1), the norm recomputed; 0 where the norm is 0 (and, for p < 1, at
    a zero element), with constant masks as the first-order backward's."""
    a, p = ctx.inputs[0], ctx.p
    g = _expanded(ctx, g)
    dead = ctx.out == 0
    norm = (a.abs() ** p).sum(ctx.axes, keepdim=True) ** (1.0 / p)
    norm = norm + _constant(dead.astype(a._array.dtype), norm)  # (1 where the norm is 0: masked below)
    power = a.abs() ** (p - 1) if p != 2 else a.abs()
    if p < 1:
        power = _masked(power + _constant((ctx.a == 0).astype(a._array.dtype), power), ctx.a != 0)
    grad = _constant(_e._torch_sign(ctx.a), g) * power * _masked(g, ~dead) / norm ** (p - 1)
    return grad, None


def _swiglu(ctx, g):
    gate, up = ctx.inputs
    s = gate.sigmoid()
    return g * up * s * (1 + gate * (1 - s)), (g * gate * s if ctx.needs_input_grad[1] else None)


def _glu(ctx, g):
    """GluBackward0: the first half's gradient ``s g``, the second's ``(1 - s) s a g`` with ``s = sigmoid(b)``."""
    a, b = ctx.inputs[0].chunk(2, ctx.dim)
    s = b.sigmoid()
    return _s.cat([s * g, (1 - s) * s * a * g], ctx.dim)


def _prelu(ctx, g):
    """PreluKernelBackward0: ``g`` or ``w g`` by the input's sign; the weight's ``x g`` where ``x <= 0``, summed to its
    shape."""
    x, w = ctx.inputs
    positive = x > 0
    gw = _e.where(positive, 0.0, x * g).sum_to_size(w.shape) if ctx.needs_input_grad[1] else None
    return _e.where(positive, g, w * g), gw


def _piecewise_loss(slope):
    """SmoothL1LossBackward0 / HuberLossBackward0: ``norm * slope(d) * g`` for the input, its negation for the target
    (``norm`` 1/n for a mean)."""
    def backward(ctx, g):
        x, t = ctx.inputs
        d = x - t
        norm = 1 / d.numel() if ctx.reduction == "mean" and d.numel() else 1.0
        gx = slope(ctx, d) * norm * g
        return gx, -gx
    return backward


def _cross_of(a, b, dim):
    """linalg.cross of two tensors that may differ in shape (broadcast first, as torch's)."""
    from .matmul import cross
    shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    return cross(a.expand(*shape), b.expand(*shape), dim)


def _sinc(ctx, g):
    """SincBackward0: ``g ((pi x cos(pi x) - sin(pi x)) / (x x pi))``, 0 where ``x x pi`` is 0."""
    x = ctx.inputs[0]
    product, squared = x * math.pi, x * x * math.pi
    return _e.where(squared == 0, 0.0, g * ((product * product.cos() - product.sin()) / squared))


def _rms_norm(ctx, g):
    x, w = ctx.inputs[:2]
    width = ctx.normed.shape[1]
    x2, g2 = x.reshape(-1, width), g.reshape(-1, width)
    r = ((x2 * x2).mean(-1, keepdim=True) + ctx.eps).rsqrt()
    gw = g2 * w.reshape(width) if w is not None else g2
    gx = (r * (gw - x2 * r * r * (gw * x2).mean(-1, keepdim=True))).reshape(x.shape)
    gweight = (g2 * x2 * r).sum(0).reshape(ctx.weight_shape) if w is not None and ctx.needs_input_grad[1] else None
    return gx, gweight


class EmbeddingGrad(Function):
    """Embedding's backward as an op: each position's gradient row added into its id's row. Its own
    gradient reads the rows back (``gg[ids]``, 0 at padding positions). As torch's
    embedding_dense_double_backward, not divided by the ids' frequency under scale_grad_by_freq
    (torch: "the first backward takes care of scaling"), so the values are torch's."""

    @staticmethod
    def forward(ctx, g, embedding_ctx):
        ids = embedding_ctx.ids.reshape(-1)
        keep = _e.xp_of(g).ones(ids.size, dtype=g.dtype)
        if embedding_ctx.padding_idx is not None:
            keep = keep * (ids != embedding_ctx.padding_idx)
        ctx.ids, ctx.keep, ctx.g_shape = ids, keep[:, None], g.shape
        return Embedding.backward(embedding_ctx, g)[1]

    @staticmethod
    def backward(ctx, gg):
        return (gg[ctx.ids] * ctx.keep).reshape(ctx.g_shape), None

    @staticmethod
    def backward_graph(ctx, gg):
        rows = _s.GetItem.apply(gg, ctx.ids) * _constant(ctx.keep, gg)
        return rows.reshape(ctx.g_shape), None


def _nll_loss(ctx, g):
    """``-g * weight / divisor`` put at each row's target (linear in the log-probabilities)."""
    if ctx.reduction == "mean" and ctx.divisor == 0 or not ctx.safe.size:  # no function of logp
        return _constant(ctx.fn.backward(ctx, g._array)[0], g), None
    scale = g * _constant(ctx.row_weight, g)
    if ctx.reduction == "mean":
        scale = scale / float(ctx.divisor)
    rows = g._device.xp.arange(len(ctx.safe))
    return ScatterIndexed.apply(-scale, _Placement(ctx.shape, (rows, ctx.safe))), None


def _as_tensor(value, like):
    return value if isinstance(value, Tensor) or value is None else _constant(value, like)


def _bce_with_logits(ctx, g):
    x, y = ctx.inputs[:2]
    nx, ny, nw, npw = (tuple(ctx.needs_input_grad) + (False, False))[:4]
    if nw or npw:  # (a weight or pos_weight that requires grad: minilora's recorded pass leaves it out)
        _refuse(ctx)
    y, p, weight = _as_tensor(y, g), _as_tensor(ctx.pos_weight, g), _as_tensor(ctx.weight, g)

    def scaled(d):
        d = d * g
        if weight is not None:
            d = d * weight
        if ctx.reduction == "mean":
            d = d / float(d.numel())
        return d.expand(*x.shape) if tuple(d.shape) != tuple(x.shape) else d

    gx = gy = None
    if nx:
        s = x.sigmoid()
        gx = scaled(s - y if p is None else (p * y + 1 - y) * s - p * y)
    if ny:
        gy = scaled(-x if p is None else _e.LogSigmoid.apply(-x) - _e.LogSigmoid.apply(x) * p)
    return gx, gy


class BinaryCrossEntropyGrad(Function):
    """binary_cross_entropy's input gradient ``g (x - y) / max(x (1 - x), 1e-12)`` as torch's node
    (BinaryCrossEntropyBackwardBackward0), whose own derivatives are torch's written formulas with their eps
    (FunctionsManual.cpp), not the chain rule through the clamp: to g ``(x - y) / ((1 - x + eps)(x + eps))``,
    to x ``g (x^2 - 2 x y + y) / ((x + eps)^2 (1 - x + eps)^2)``, to y ``-g / max(x (1 - x), eps)``."""

    @staticmethod
    def forward(ctx, g, x, y):
        ctx.arrays = (g, x, y)
        return g * (x - y) / _e.xp_of(x).maximum(x * (1 - x), 1e-12)

    @staticmethod
    def backward(ctx, gg):
        return _bce_second(gg, *ctx.arrays, ctx.needs_input_grad, lambda x: _e.xp_of(x).maximum(x * (1 - x), 1e-12))

    @staticmethod
    def backward_graph(ctx, gg):
        g, x, y = ctx.inputs
        return _bce_second(gg, g, x, _as_tensor(y, gg), ctx.needs_input_grad, lambda x: _bce_clamped(x, 1e-12))


def _bce_second(gg, g, x, y, needs, clamped, eps=1e-12):
    """BinaryCrossEntropyGrad's three gradients, on arrays or on tensors (``clamped(x)``: max(x (1 - x), eps))."""
    ng, nx, ny = needs
    return ((gg * (x - y) / ((1 - x + eps) * (x + eps))) if ng else None,
            (gg * g * (x * x - 2 * x * y + y) / ((x + eps) ** 2 * (1 - x + eps) ** 2)) if nx else None,
            (-gg * g / clamped(x)) if ny else None)


def _bce_clamped(x, floor):
    """``max(x (1 - x), floor)`` on tensors, the clamp's choice a constant (torch's clamp_min_ under no_grad)."""
    clamped = x._array * (1 - x._array) < floor
    return _masked(x * (1 - x), ~clamped) + _constant(clamped * floor, x)


def _bce(ctx, g):
    x, y = ctx.inputs[:2]
    nx, ny = ctx.needs_input_grad[:2]
    y = _as_tensor(y, g)
    gx = gy = None
    if nx:
        gx = BinaryCrossEntropyGrad.apply(g, x, y)
    if ny:
        gy = -(x.log() - (-x).log1p()) * g
    return gx, gy


def _bce_loss(ctx, g):
    """BinaryCrossEntropyBackward0 with the reduction inside: the elementwise gradients times weight, over n."""
    x, y = ctx.inputs[:2]
    y = _as_tensor(y, g)
    g = g.expand(*x.shape)  # (a reduction's scalar g: its gradient sums back through the expand)
    scale = 1 / x.numel() if ctx.reduction == "mean" and x.numel() else 1.0
    weight = None if ctx.weight is None else _constant(ctx.weight, g)
    grads = []
    for needed, formula in ((ctx.needs_input_grad[0], lambda: BinaryCrossEntropyGrad.apply(g, x, y)),
                            (ctx.needs_input_grad[1], lambda: -(x.log() - (-x).log1p()) * g)):
        grad = formula() if needed else None
        if grad is not None:
            grad = (grad if weight is None else grad * weight) * scale
        grads.append(grad)
    return tuple(grads)


def _rotary(ctx, g):
    """A rotation: back by ``g cos + rotate_half^T(g sin)``, ``rotate_half^T(u) = cat(u2, -u1)``."""
    if any(ctx.needs_input_grad[1:]):  # (tables that require grad: left out of the recorded pass)
        _refuse(ctx)
    cos, sin = (_as_tensor(t, g) for t in ctx.inputs[1:3])
    u = g * sin
    half = u.shape[-1] // 2
    return g * cos + _s.Cat.apply(u[..., half:], -u[..., :half], axis=-1), None, None


def _repeat_heads(t, heads):
    """[B, Hkv, T, D] -> [B, heads, T, D], each KV head repeated for its group of query heads (GQA)."""
    b, hkv, n, d = t.shape
    if hkv == heads:
        return t
    return t.unsqueeze(2).expand(b, hkv, heads // hkv, n, d).reshape(b, heads, n, d)


def _sum_heads(t, hkv):
    b, hq, n, d = t.shape
    return t if hq == hkv else t.reshape(b, hkv, hq // hkv, n, d).sum(2)


def _grid_sample_bilinear(ctx, g):
    """grid_sample's gradients recorded: its composition from ops (``sampling._composed``) run again on the node's
    inputs and differentiated with create_graph (the same derivative as the kernel's, rounded otherwise)."""
    from ..autograd import grad
    from .sampling import _composed
    input, grid = ctx.inputs[:2]
    with enable_grad():
        out = _composed(input, grid, "bilinear", ctx.padding_mode, ctx.align_corners)
    wanted = [t for t, need in zip((input, grid), ctx.needs_input_grad) if need]
    found = iter(grad(out, wanted, g, create_graph=True, allow_unused=True))
    return tuple(next(found) if need else None for need in ctx.needs_input_grad[:2])


def _attention(ctx, g):
    """The attention recomputed with ops (S = q k^T scale + bias, P = softmax(S), O = P v), then
    dv = P^T g, dP = g v^T, dS = P (dP - rowsum(dP P)), dq = dS k scale, dk = dS^T q scale. A query
    row with every key masked out has P = 0 (as forward's), a constant."""
    q, k, v = ctx.inputs[:3]
    if len(ctx.needs_input_grad) > 3 and ctx.needs_input_grad[3]:  # (a bias tensor that requires grad)
        _refuse(ctx)
    nq, nk, nv = ctx.needs_input_grad[:3]
    if getattr(ctx, "probs", ()) is None:
        return tuple(_constant(g._device.xp.zeros_like(t._array), g) for t in (q, k, v)) + (None,)
    hq, hkv, scale = q.shape[1], k.shape[1], float(ctx.scale)
    kr, vr = _repeat_heads(k, hq), _repeat_heads(v, hq)
    scores = q.matmul(kr.transpose(-1, -2)) * scale
    bias = ctx.inputs[3] if len(ctx.inputs) > 3 else None
    if ctx.fn is FlashAttention32:  # (its causal keys are no part of its bias)
        bias = FlashAttention32.scores_bias(ctx)
    live = _rows_seeing_a_key(ctx, bias)
    if bias is not None:
        bias = bias._array if isinstance(bias, Tensor) else bias
        bias = g._device.xp.where(live, bias, 0)  # (a dead row: finite scores, its P masked below)
        scores = scores + _constant(bias.astype(scores._array.dtype), g)
    p = _masked(scores.softmax(-1), live)
    dp = g.matmul(vr.transpose(-1, -2))
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))
    dq = ds.matmul(kr) * scale if nq else None
    dk = _sum_heads(ds.transpose(-1, -2).matmul(q) * scale, hkv) if nk else None
    dv = _sum_heads(p.transpose(-1, -2).matmul(g), hkv) if nv else None
    return dq, dk, dv, None


def _rows_seeing_a_key(ctx, bias):
    """[..., Tq, 1]: the query rows with at least one key taking part (their weights are 0 elsewhere): where the
    fused node kept the weights, by them; the flash node (``attention32``, which keeps none) by the bias."""
    if ctx.fn is FlashAttention32:
        bias = bias._array if isinstance(bias, Tensor) else bias
        return np.ones((*ctx.lse.shape, 1), bool) if bias is None else (bias != -np.inf).any(axis=-1, keepdims=True)
    return (ctx.probs != 0).any(axis=-1, keepdims=True)


def _hardswish(ctx, g):
    a = ctx.inputs[0]
    middle, high = (ctx.a > -3) & (ctx.a < 3), ctx.a >= 3
    return _masked(g * (a / 3 + 0.5), middle) + _masked(g, high)


def _mish(ctx, g):
    a = ctx.inputs[0]
    t = _e.Softplus.apply(a, beta=1, threshold=20).tanh()
    return g * (t + a * a.sigmoid() * (1 - t * t))


def _atan2(ctx, g):
    (a, b), (na, nb) = ctx.inputs, ctx.needs_input_grad
    origin = (np.asarray(ctx.a) * ctx.a + np.asarray(ctx.b) * ctx.b) == 0  # torch: no gradient at (0, 0)
    denominator = a * a + b * b + _constant(origin.astype(g._array.dtype), g)
    return (sum_to(_masked(g * b / denominator, ~origin), _shape(a)) if na else None,
            sum_to(_masked(-g * a / denominator, ~origin), _shape(b)) if nb else None)


def _hypot(ctx, g):
    (a, b), (na, nb) = ctx.inputs, ctx.needs_input_grad
    out = (a * a + b * b).sqrt()
    return (sum_to(g * a / out, _shape(a)) if na else None, sum_to(g * b / out, _shape(b)) if nb else None)


def _lerp(ctx, g):
    (start, end, weight), (ns, ne, nw) = ctx.inputs, ctx.needs_input_grad
    return (sum_to(g * (1 - weight), _shape(start)) if ns else None,
            sum_to(g * weight, _shape(end)) if ne else None,
            sum_to(g * (end - start), _shape(weight)) if nw else None)


def _logit(ctx, g):
    a, eps, dtype = ctx.inputs[0], ctx.eps, g._array.dtype
    low, high, outside = (0, 1, np.nan) if eps is None else (eps, 1 - eps, 0.0)
    out_of_range = (ctx.a < low) | (ctx.a > high)  # (torch's first-order value there: nan, or 0 with eps)
    if not out_of_range.any():
        return g / (a * (1 - a)), None
    safe = a * (1 - a) + _constant(out_of_range.astype(dtype), g)
    return _masked(g / safe, ~out_of_range) + _constant(np.where(out_of_range, outside, 0.0).astype(dtype), g), None


def _xlogy(ctx, g):
    (x, y), (nx, ny) = ctx.inputs, ctx.needs_input_grad
    undefined = (np.asarray(ctx.x) == 0) & (np.asarray(ctx.y) <= 0)
    log_y = y.log() if isinstance(y, Tensor) else float(np.log(y))
    gx = sum_to(_masked(g * log_y, ~undefined) if undefined.any() else g * log_y, _shape(x)) if nx else None
    gy = sum_to(g * x / y, _shape(y)) if ny else None
    return gx, gy


def _trilinear(ctx, g):
    """torch's _trilinear_backward: each operand's gradient is _trilinear again, g in its place"""
    calls = zip(ctx.needs_input_grad, *trilinear_gradients(tuple(ctx.inputs[:3]), ctx.dims, g))
    return tuple(trilinear(*operands, *dims) if need else None for need, operands, dims in calls)


def _einsum(ctx, g):
    """Each operand's gradient is the einsum of g with the others (torch's einsum backward), broadcast
    over the letters only that operand has (``ij->j``'s i); an operand with a repeated letter (a trace,
    a diagonal) refuses."""
    grads = []
    for i, sub in enumerate(ctx.subs):
        if not ctx.needs_input_grad[i]:
            grads.append(None)
            continue
        if len(set(sub)) != len(sub):
            _refuse(ctx)
        others = [j for j in range(len(ctx.subs)) if j != i]
        present = set(ctx.output).union(*(ctx.subs[j] for j in others))
        target = "".join(c for c in sub if c in present)
        grad = Einsum.apply(g, *(ctx.inputs[j] for j in others), subs=[ctx.output] + [ctx.subs[j] for j in others],
                            output=target)
        for position, c in enumerate(sub):
            if c not in present:
                grad = grad.unsqueeze(position)
        grads.append(grad.expand(*ctx.inputs[i].shape) if target != sub else grad)
    return tuple(grads)


class LinearPair(Function):
    """The backward of a linear (or piecewise linear) op as an op of its own: ``vjp(node_ctx, g)`` on
    arrays. Its own backward is the op's Jacobian applied to the incoming gradient, ``jvp(node_ctx, gg)``,
    and the backward of that is ``vjp`` again: pooling differentiates to every order. ``source``: the
    op's input where torch's formula reads it (pooling's ``self``: zeros_like(self)), connected with a
    zero derivative (see StepScaled). Complex gradients pass as the plain engine passes them through a map
    linear over the reals (``complex_grad = True``): ``jvp`` is the adjoint of ``vjp`` for the real inner product
    Re(conj(a) b) (torch.fft's transforms and their backwards)."""
    complex_grad = True

    @staticmethod
    def forward(ctx, g, node_ctx, jvp, vjp, source=None):
        ctx.node_ctx, ctx.jvp, ctx.vjp = node_ctx, jvp, vjp
        return vjp(node_ctx, g)

    @staticmethod
    def backward(ctx, gg):
        return ctx.jvp(ctx.node_ctx, gg), None, None, None, _zeros_for_source(ctx, gg)

    @staticmethod
    def backward_graph(ctx, gg):
        zeros = _zeros_for_source(ctx, gg._array)
        return (LinearPair.apply(gg, ctx.node_ctx, ctx.vjp, ctx.jvp), None, None, None,
                None if zeros is None else _constant(zeros, gg))


def _zeros_for_source(ctx, like):
    needs = ctx.needs_input_grad
    if len(needs) < 5 or not needs[4]:
        return None
    return _e.xp_of(like).zeros_like(ctx.inputs[4]._array)


def _nth(op, i):
    """``op.backward`` on arrays, its ``i``-th gradient only."""
    def vjp(ctx, g):
        grads = op.backward(ctx, g)
        return grads[i] if isinstance(grads, tuple) else grads
    return vjp


def _first(op):
    """``op.backward`` on arrays, its first gradient only (the input's)."""
    return _nth(op, 0)


def _max_pool_jvp(ctx, x):
    """Each window's chosen element of ``x`` (the maxima's places, fixed at forward)."""
    xp = _e.xp_of(x)
    padded_shape, kernel, stride, dilation, padding, window_shape = ctx.geometry
    (ph, pw) = padding
    padded = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    windows = _windows(xp, padded, kernel, stride, dilation)
    flat = windows.reshape(*windows.shape[:4], windows.shape[4] * windows.shape[5])
    return xp.take_along_axis(flat, ctx.choice[..., None], -1)[..., 0]


def _avg_pool_jvp(ctx, x):
    shape, padded_shape, stride, padding, window_shape = ctx.geometry
    extra = tuple(p - n - 2 * q for p, n, q in zip(padded_shape[2:], shape[2:], padding))
    return AvgPool2d.forward(_Scratch(), x, tuple(window_shape[-2:]), stride, padding, extra, ctx.divisors)


def _adaptive_avg_pool_jvp(ctx, x):
    return AdaptiveAvgPool2d.forward(_Scratch(), x, ctx.rows, ctx.cols)


class _Scratch:
    """A throwaway ctx for running an op's forward on arrays (what it saves is not needed)."""


def _pooling(jvp, op):
    """A pooling's recorded backward; torch's formula reads the input (zeros_like(self))."""
    vjp = _first(op)

    def backward_graph(ctx, g):
        if ctx.round_to is not None:  # (16-bit rounding in between: not a linear map to record)
            _refuse(ctx)
        return LinearPair.apply(g, ctx, jvp, vjp, ctx.inputs[0])
    return backward_graph


def _lora_linear(ctx, g):
    """PEFT's ``x W0^T + bias + s (dropout(x) A^T) B^T`` differentiated with ops (the dropout mask a
    constant, as torch's): dX = g W0 + s ((g B) A) * keep, dA = s (g B)^T (x keep), dB = s g^T (x keep) A^T."""
    x, W0, A, B = ctx.inputs[:4]
    if ctx.X.itemsize == 2:  # (PEFT's 16-bit mixed precision: not recorded)
        _refuse(ctx)
    nx, nw, na, nb, nbias = (tuple(ctx.needs_input_grad) + (False,) * 5)[:5]
    keep = _lora_dropout_multipliers(ctx.X, ctx.p, ctx.seed, ctx.mask)
    keep = None if keep is None else _constant(keep.astype(ctx.X.dtype, copy=False), g)
    X, g2, s = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]), float(ctx.scale)
    dropped = X if keep is None else X * keep
    gB = g2.matmul(B)
    dx = dw = da = db = dbias = None
    if nx:
        through_adapter = gB.matmul(A) * s
        dx = (g2.matmul(W0) + (through_adapter if keep is None else through_adapter * keep)).reshape(x.shape)
    if nw:
        dw = g2.transpose(0, 1).matmul(X)
    if na:
        da = gB.transpose(0, 1).matmul(dropped) * s
    if nb:
        db = g2.transpose(0, 1).matmul(dropped.matmul(A.transpose(0, 1))) * s
    if nbias:
        dbias = g2.sum(0)
    return dx, dw, da, db, dbias


def _logaddexp(ctx, g):
    (a, b), (na, nb) = ctx.inputs, ctx.needs_input_grad
    return (sum_to(g * (a - b).sigmoid(), _shape(a)) if na else None,
            sum_to(g * (b - a).sigmoid(), _shape(b)) if nb else None)


def _logaddexp2(ctx, g):  # (torch's derivatives.yaml: grad / (1 + pow(2, other - self)), and the other way)
    (a, b), (na, nb) = ctx.inputs, ctx.needs_input_grad
    return (sum_to(g / (1 + (b - a).exp2()), _shape(a)) if na else None,
            sum_to(g / (1 + (a - b).exp2()), _shape(b)) if nb else None)


def _index_put(ctx, g):
    """``a`` with ``values`` written (or added) at ``index``: ``a`` gets g (0 where overwritten), ``values``
    gets g at ``index``, summed down to its shape."""
    needs_a, needs_values = ctx.needs_input_grad[:2]
    grad_a = grad_values = None
    if needs_a:
        grad_a = g if ctx.accumulate else _masked(g, _s.zeroed_at(g._device.xp.ones(g.shape, bool), ctx.index))
    if needs_values:
        grad_values = sum_to(_s.GetItem.apply(g, ctx.index), ctx.values_shape)
    return grad_a, grad_values


def _repeat(ctx, g):
    """The sum over the copies: every axis of length r*n split into (r, n), the r axis summed. As torch's
    repeat_backward: no copy (a zero repeat) is a constant zeros, and one copy of each dim, none added, the
    gradient itself (tile's padding with 1s included)."""
    if 0 in ctx.sizes:
        return _constant(g._device.xp.zeros(ctx.original, g._array.dtype), g), None
    if len(ctx.sizes) == len(ctx.original) and all(r == 1 for r in ctx.sizes):
        return g, None
    split = []
    for r, n in zip(ctx.sizes, ctx.shape):
        split += [r, n]
    return g.reshape(*split).sum(tuple(range(0, 2 * len(ctx.shape), 2))).reshape(ctx.original), None


def _diagonal_jvp(ctx, x):
    """The op itself (linear): the diagonal of ``x``."""
    return _e.xp_of(x).diagonal(x, ctx.offset, *ctx.axes).copy()


def _roll(ctx, g):
    back = tuple(-s for s in ctx.shifts) if isinstance(ctx.shifts, tuple) else -ctx.shifts
    return g.roll(back, ctx.axes), None, None


# ---- the special functions, products, transposed convolution, the scatters: each formula is torch's
# derivatives.yaml entry on minilora's ops (``result`` recomputed from the input, so it stays in the graph) --
_POINTWISE = {  # Pointwise's functions: name -> d out / d a, as torch's derivatives.yaml
    "tan": lambda a: 1 + a.tan() ** 2,  # tan: grad * (1 + result.pow(2))
    "arcsin": lambda a: (1 - a * a).rsqrt(),  # asin: grad * (-self * self + 1).rsqrt()
    "arccos": lambda a: -(1 - a * a).rsqrt(),  # acos: grad * -((-self * self + 1).rsqrt())
    "arctan": lambda a: 1 / (a * a + 1),  # atan: grad / (self * self + 1)
    "sinh": lambda a: a.cosh(),  # sinh: grad * self.cosh()
    "cosh": lambda a: a.sinh(),  # cosh: grad * self.sinh()
    "arcsinh": lambda a: (a * a + 1).rsqrt(),  # asinh: grad * (self.pow(2) + 1).rsqrt()
    "arccosh": lambda a: ((a - 1).rsqrt() * (a + 1).rsqrt() if a.is_complex()  # acosh: grad * (self.pow(2) -
                          else (a * a - 1).rsqrt()),  # 1).rsqrt(); complex: principal branch (_acosh_derivative)
    "arctanh": lambda a: 1 / (1 - a * a),  # atanh: grad * 1 / (1 - self.pow(2))
    "exp2": lambda a: a.exp2() * float(np.log(2)),  # exp2: grad * result * M_LN2
}


def _pointwise(ctx, g):
    return g * _POINTWISE[ctx.op_name](ctx.inputs[0]), None


def _not_tiny(a):
    """torch's i1/i1e backward: x where |x| > eps (the formula's 1/x), eps elsewhere (then 1/2, masked)."""
    eps = float(np.finfo(a._array.dtype).eps)
    tiny = a._device.xp.abs(a._array) <= eps
    return tiny, _masked(a, ~tiny) + _constant(tiny * eps, a).to(a.dtype)


def _i1(ctx, g):  # i1_backward: grad * where(|x| > eps, i0(x) - result / x, 0.5)
    a = ctx.inputs[0]
    tiny, safe = _not_tiny(a)
    return _masked(g * (safe.i0() - _sp.i1(a) / safe), ~tiny) + _masked(g * 0.5, tiny)


def _i1e(ctx, g):  # i1e_backward: grad * where(|x| > eps, i0e(x) - result * (sgn(x) + 1 / x), 0.5)
    a = ctx.inputs[0]
    tiny, safe = _not_tiny(a)
    return _masked(g * (_sp.i0e(safe) - _sp.i1e(a) * (safe.sgn() + 1 / safe)), ~tiny) + _masked(g * 0.5, tiny)


def _xlog1py(ctx, g):
    """self: xlog1py(grad, other).masked_fill((self == 0) & (other <= -1), 0); other: grad * self / (other + 1)"""
    (x, y), (nx, ny) = ctx.inputs, ctx.needs_input_grad
    undefined = (np.asarray(ctx.x) == 0) & (np.asarray(ctx.y) <= -1)
    gx = sum_to(_masked(_sp.xlog1py(g, y), ~undefined), _shape(x)) if nx else None
    return gx, (sum_to(g * x / (y + 1), _shape(y)) if ny else None)


def _zeta(ctx, g):  # other: grad * -self * special_zeta(self + 1., other); self: not implemented
    x, q = ctx.inputs
    if ctx.needs_input_grad[0]:
        raise NotImplementedError("the derivative for 'zeta' is not implemented.")
    return None, sum_to(g * -x * _sp.zeta(x + 1, q), _shape(q))


def _igamma(ctx, g):  # other: +-grad * exp((self - 1) * log(other) - other - lgamma(self)); self: not implemented
    a, x = ctx.inputs[0], ctx.inputs[1]
    if ctx.needs_input_grad[0]:
        raise NotImplementedError(f"the derivative for '{'igamma' if ctx.lower else 'igammac'}: input' is not "
                                  "implemented.")
    density = ((a - 1) * x.log() - x - a.lgamma()).exp()
    return None, sum_to((g if ctx.lower else -g) * density, _shape(x)), None, None


def _prod(ctx, g):
    """prod_backward: ``grad * result / input`` without zeros; with one, prod_safe_zeros_backward: the
    products of the elements before and after each (exclusive cumulative products). An empty input has no zero:
    the first formula, in the graph as torch's (empty)."""
    a, axis = ctx.inputs[0], ctx.axis
    g = g if ctx.keepdims else g.unsqueeze(axis)
    if not (ctx.a == 0).any():
        return g * (a.prod(axis, keepdim=True) / a)
    return g * _exclusive_cumprod(a, axis) * _exclusive_cumprod(a.flip(axis), axis).flip(axis)


def _exclusive_cumprod(a, axis):
    """``[1, a0, a0 a1, ...]`` along ``axis``: each element's product of the ones before it."""
    ones = _constant(a._device.xp.ones_like(a._array.take([0], axis=axis)), a)
    return _s.Cat.apply(ones, a.narrow(axis, 0, a.shape[axis] - 1), axis=axis).cumprod(axis)


def _cumprod(ctx, g):
    """cumprod_backward: ``reversed_cumsum(result * grad) / input`` without zeros; with one, torch's
    O(n^2) sum for each k of ``grad[k:] * prod(input[:k]) * cumprod(input[k+1:])``."""
    a, axis = ctx.inputs[0], ctx.axis % max(ctx.inputs[0].ndim, 1)
    n = a.shape[axis] if a.ndim else 1
    if a.numel() <= 1 or n == 1:
        return g, None
    if not (ctx.a == 0).any():
        return _reversed_cumsum(a.cumprod(axis) * g, axis) / a, None
    ones = _constant(a._device.xp.ones_like(a._array.take([0], axis=axis)), a)
    grads = []
    for k in range(n):
        after = a.narrow(axis, k + 1, n - k - 1).cumprod(axis) if k < n - 1 else None
        before = a.narrow(axis, 0, k).prod(axis, keepdim=True) if k else ones
        omitted = before if after is None else _s.Cat.apply(before, before * after, axis=axis)
        grads.append((g.narrow(axis, k, n - k) * omitted).sum(axis, keepdim=True))
    return _joined(grads, axis), None


def _hardsigmoid(ctx, g):
    """1/6 inside (-3, 3): the float32 sixth in every dtype, as the plain backward (torch's ``1.0f / 6.0f``)."""
    return _masked(g, ctx.inside) * float(np.float32(1) / np.float32(6))


def _reversed_cumsum(x, axis):
    return x.flip(axis).cumsum(axis).flip(axis)


def _logcumsumexp(ctx, g):
    """logcumsumexp_backward: the positive and the negative gradients apart, summed in log space
    (``exp(self + reversed_logcumsumexp(log|grad| - result))``), as torch's formula."""
    a, axis = ctx.inputs[0], ctx.axis
    if not g.numel():
        return g, None
    result = a.logcumsumexp(axis)
    lowest = _constant(g._device.xp.full((), np.finfo(g._array.dtype).min, g._array.dtype), g)
    log_abs = g.abs().log()
    parts = [(_e.where(_constant(side, g), log_abs, lowest) - result).flip(axis).logcumsumexp(axis).flip(axis)
             for side in (g._array > 0, g._array < 0)]
    return (parts[0] + a).exp() - (parts[1] + a).exp(), None


def _conv_transpose2d(ctx, g):
    """The adjoint of a convolution: the input's gradient is ``conv2d(grad, weight)``, the weight's is
    conv2d's weight gradient with the roles of ``grad`` and the input swapped (per group:
    ``x @ unfold(grad)^T``)."""
    x, w = ctx.inputs[:2]
    stride, padding, dilation, (h, width) = ctx.geometry
    nx, nw = ctx.needs_input_grad[:2]
    groups = ctx.weight.shape[0]
    # (with output_padding the gradient holds more windows than the input has pixels: the first h x width,
    # as the plain backward's crop)
    gx = Conv2d.apply(g, w, stride=stride, padding=padding, dilation=dilation, groups=groups)[:, :, :h, :width] \
        if nx else None
    gw = None
    if nw:
        n, c_in, kernel = x.shape[0], x.shape[1], tuple(w.shape[2:])
        cg, og = c_in // groups, g.shape[1] // groups
        grid = tuple((size + 2 * p - d * (k - 1) - 1) // s + 1
                     for size, p, d, k, s in zip(g.shape[2:], padding, dilation, kernel, stride))
        parts = []
        for k in range(groups):
            cols = Unfold.apply(g[:, k * og:(k + 1) * og], kernel=kernel, stride=stride, padding=padding,
                                dilation=dilation)
            if grid != (h, width):
                cols = cols.reshape(n, cols.shape[1], *grid)[:, :, :h, :width].reshape(n, cols.shape[1], h * width)
            xk = x[:, k * cg:(k + 1) * cg].reshape(n, cg, h * width)
            parts.append(xk.matmul(cols.transpose(1, 2)).sum(0).reshape(cg, og, *kernel))
        gw = _joined(parts, 0)
    return gx, gw


# ---- ops linear in their differentiable inputs together: each input's gradient is a LinearPair of
# the op's own backward (its i-th gradient) and the op's Jacobian in that input's direction (jvp) --
def _linear_in_each(*jvps):
    def backward_graph(ctx, g):
        if getattr(ctx, "round_to", None) is not None:  # (16-bit rounding in between: not linear)
            _refuse(ctx)
        return tuple((g if jvp is _unchanged else LinearPair.apply(g, ctx, jvp, _nth(ctx.fn, i)))
                     if jvp is not None and need else None
                     for i, (jvp, need) in enumerate(zip(jvps, ctx.needs_input_grad)))
    return backward_graph


def _unchanged(ctx, d):
    """An input whose gradient is the incoming one itself (derivatives.yaml's ``self: grad``: index_add's,
    scatter_add's): handed on as it is, not recorded again, as torch hands on the same tensor."""
    return d


def _zeros_out(ctx, d):
    """Zeros of the op's result's shape (that of its first input) in ``d``'s dtype."""
    return _e.xp_of(d).zeros(tuple(ctx.inputs[0].shape), d.dtype)


def _written(ctx, d, where, values, add=False):
    """Zeros of the result's shape with ``values`` written (``add``: added) at ``where``."""
    out = _zeros_out(ctx, d)
    if add:
        _s.add_at(out, where, values)
        return out
    return _s.put_into_copy(out, where, values)


def _unpool_adjoint(ctx, d):
    """The transpose of max_unpool's backward (a gather at the indices): ``d`` added at the indices, so an index
    that repeats (overlapping pooling windows chose one element twice) sums its two values, as torch's double
    backward (not the unpooling's put, where the later one wins)."""
    xp, (planes, cells) = _e.xp_of(d), ctx.flat.shape
    out = xp.zeros((planes, ctx.size[0] * ctx.size[1]), d.dtype)
    xp.add.at(out, (xp.arange(planes)[:, None], ctx.flat), d.reshape(planes, cells))
    return out.reshape(*ctx.shape[:-2], *ctx.size)


def _scatter_reduce_jvp_self(ctx, d):
    kept = d if ctx.include_self else _e.xp_of(d).where(ctx.hit > 0, 0, d)
    return (kept / ctx.count if ctx.reduce == "mean" else kept).astype(d.dtype, copy=False)


def _scatter_reduce_jvp_src(ctx, d):
    index_shape = np.broadcast_shapes(*(w.shape for w in ctx.where))  # (src's leading block: the index's shape)
    summed = _written(ctx, d, ctx.where, d[tuple(slice(0, n) for n in index_shape)], add=True)
    return (summed / ctx.count if ctx.reduce == "mean" else summed).astype(d.dtype, copy=False)


def _extreme_ties(ctx, dtype):
    """amax/amin's masks, as the plain backward's (index._extreme_gradients): which of ``self`` and of the
    values reduced in equal their position's result, and how many share each result."""
    self_is_result, src_is_result = ctx.a == ctx.out, ctx.values == ctx.out[ctx.where]
    ties = self_is_result.astype(dtype)
    _s.add_at(ties, ctx.where, src_is_result)
    return self_is_result, src_is_result, ties


def _extreme_jvp_self(ctx, d):
    """The transpose of amax/amin's self gradient ``self_is_result g / ties`` (a constant diagonal)."""
    self_is_result, _, ties = _extreme_ties(ctx, d.dtype)
    kept = self_is_result * d / ties
    return kept if ctx.include_self else _e.xp_of(d).where(ctx.hit > 0, 0, kept)


def _extreme_jvp_src(ctx, d):
    """The transpose of amax/amin's src gradient ``src_is_result (g / ties)[index]``: scattered back, shared."""
    _, src_is_result, ties = _extreme_ties(ctx, d.dtype)
    block = tuple(slice(0, n) for n in src_is_result.shape)
    return _written(ctx, d, ctx.where, src_is_result * d[block], add=True) / ties


def _scatter_reduce(ctx, g):
    """sum/mean, amax/amin: linear in the gradient (amax/amin's ties are constants, as torch's masks); prod:
    torch's formula on ops (_scatter_reduce_prod)."""
    if ctx.reduce in ("amax", "amin"):
        return _linear_in_each(_extreme_jvp_self, _extreme_jvp_src)(ctx, g)
    if ctx.reduce == "prod":
        return _scatter_reduce_prod(ctx, g)
    jvp_self = _unchanged if ctx.reduce == "sum" and ctx.include_self else _scatter_reduce_jvp_self
    return _linear_in_each(jvp_self, _scatter_reduce_jvp_src)(ctx, g)


def _scatter_reduce_prod(ctx, g):
    """FunctionsManual's scatter_reduce_backward / index_reduce_backward for 'prod', on ops: a factor's gradient
    is the product of the others. self's: ``grad * masked_self.scatter_reduce(src) / masked_self``, its zeros
    taken as ones (the zero itself drops out of its own product). src's: ``(grad * result)[index] / src``, where a
    src value is the only zero sent to its place, ``(grad * self.scatter_reduce(src with that zero as 1))[index]``.
    With two zeros sent to one place torch gives the gradient (zeros) but refuses to differentiate it again: a
    DelayedError in its words."""
    (a, src), (need_a, need_src) = ctx.inputs[:2], ctx.needs_input_grad[:2]
    xp, dtype = g._device.xp, g._array.dtype

    def reduced(base, values):
        return ScatterReduce.apply(base, values, index=ctx.index, axis=ctx.axis, reduce="prod",
                                   include_self=ctx.include_self, stepwise=ctx.stepwise)

    grad_a = grad_src = None
    if need_a:
        masked_self = _e.masked_fill(a, _constant(ctx.a == 0, a), 1)
        grad_a = g * reduced(masked_self, src) / masked_self
        if not ctx.include_self:  # (torch: grad_self.scatter(dim, index, 0): a position's old value is gone)
            grad_a = _masked(grad_a, ctx.hit == 0)
    if need_src:
        src_zero = ctx.values == 0
        zeros_there = xp.zeros(ctx.a.shape, dtype)
        _s.add_at(zeros_there, ctx.where, src_zero)
        single_zero = src_zero & (zeros_there[ctx.where] == 1)
        block = tuple(slice(0, n) for n in ctx.index.shape)
        values = src if tuple(src.shape) == tuple(ctx.index.shape) else src[block]
        without_it = reduced(a, _e.masked_fill(values, _constant(single_zero, a), 1))
        spread = (g * reduced(a, values))[ctx.where] / _e.masked_fill(values, _constant(src_zero, a), 1)
        grad_src = _e.where(_constant(single_zero, a), (g * without_it)[ctx.where], spread)
        if (zeros_there > 1).any():
            op, what = ("index_reduce", "source") if ctx.name() == "IndexReduceBackward0" else ("scatter_reduce", "src")
            grad_src = DelayedError.apply(grad_src, g, a, src, message=f"{op}(): Double backward is unsupported for "
                                          f"{what} when >1 zeros in {what} are scattered to the same position in self")
    return grad_a, grad_src


def _as_strided_jvp(ctx, d):
    """The adjoint of AsStrided's backward: ``d`` put in storage through the input's geometry (shared
    among the places that show one element), read out through the view's."""
    xp, n = _e.xp_of(d), ctx.storage_size
    shown = _s._positions(n, ctx.input_geometry, xp)
    storage = _s.summed_in_storage(shown.reshape(-1), d.reshape(-1), n, xp)
    if _s._self_overlapping(shown):
        storage /= xp.maximum(xp.bincount(shown.reshape(-1), minlength=n), 1)
    return storage[_s._positions(n, ctx.geometry, xp)].astype(d.dtype)


def _adaptive_max_pool_jvp(ctx, d):
    """Each output cell's chosen element of ``d`` (the maxima's places, fixed at forward)."""
    xp, planes = _e.xp_of(d), int(np.prod(ctx.shape[:-2]))
    flat = d.reshape(planes, ctx.shape[-2] * ctx.shape[-1])
    return xp.take_along_axis(flat, ctx.where.reshape(planes, -1), 1).reshape(ctx.where.shape)


def _median_jvp(ctx, d):
    with np.errstate(divide="ignore", invalid="ignore"):
        return _e.xp_of(d).asarray((ctx.picked * d).sum() / ctx.picked.sum(), dtype=d.dtype)


def _remainder(ctx, g):  # self: grad; other: -grad * self.div(other, rounding_mode="floor" / "trunc")
    (a, b), (na, nb) = ctx.inputs, ctx.needs_input_grad
    gb = sum_to(-g * _e.div(a, b, rounding_mode=ctx.fn.rounding), ctx.shapes[1]) if nb else None
    return (sum_to(g, ctx.shapes[0]) if na else None), gb


def _zeros_for_each(ctx, g):
    """A piecewise-constant op (rounded division): zero gradients, in no graph."""
    return tuple(_constant(g._device.xp.zeros(shape, g._array.dtype), g) if need else None
                 for shape, need in zip(ctx.shapes, ctx.needs_input_grad))


def _inverse_t(ctx):
    """``A^{-T}`` of the node's matrix, recomputed with linalg.inv (in the graph)."""
    return _la.inv(ctx.inputs[0]).transpose(-1, -2)


def _per_matrix(g):
    return g.unsqueeze(-1).unsqueeze(-1)


def _det(ctx, g):
    """linalg_det_backward: grad * det * A^-T for an invertible A. With a singular one in the batch (det exactly
    0), torch's formula from the SVD, det A = det(U) det(Vh) prod(S): the cofactors

        gA = U diag(grad det(U) det(Vh) prod_{j != i} S_j) Vh

    (each product of the other singular values taken without dividing, as prod's zero-safe backward)."""
    A = ctx.inputs[0]
    if A.numel() == 0:  # (torch: no formula to record, zeros)
        return _constant(g._device.xp.zeros(A.shape, g._array.dtype), g)
    if A.shape[-1] == 1:  # (torch's 1x1 case: det A = a, the gradient is grad itself, expanded; not in A's graph)
        return _per_matrix(g).expand(*A.shape)
    if np.all(ctx.outputs[0]):
        try:
            return _per_matrix(g * _la.det(A)) * _inverse_t(ctx)
        except _la.LinAlgError:  # (torch's det reads LU(A^T): a round-off det where LU(A) meets a zero pivot)
            pass
    U, S, Vh = _la.svd(A)
    others = _exclusive_cumprod(S, -1) * _exclusive_cumprod(S.flip(-1), -1).flip(-1)
    scale = (g * _la.det(U) * _la.det(Vh)).unsqueeze(-1) * others
    return U.mul(scale.unsqueeze(-2)).matmul(Vh)


def _solve(ctx, g):
    """linalg_solve_backward: gB = solve(A^H, grad), gA = -gB X^H (X recomputed; a vector right-hand side
    as a column). ``left=False`` reached here already transposed (solve(A^T, B^T)^T)."""
    (A, B), (na, nb) = ctx.inputs, ctx.needs_input_grad
    vector = _la._vector_rhs(A, B)
    X = _la.solve(A, B)
    gB = _la.solve(A.transpose(-1, -2), g)
    if vector:
        gA = -(gB.unsqueeze(-1).matmul(X.unsqueeze(-2)))
    else:
        gA = -(gB.matmul(X.transpose(-1, -2)))
    return (sum_to(gA, A.shape) if na else None), (sum_to(gB, B.shape) if nb else None)


def _cholesky(ctx, g):
    """cholesky_backward: phi = tril(L^H gL) with its diagonal halved, gA = L^-H phi L^-1, symmetrized
    (L recomputed; an upper factor's gradient transposed first)."""
    L = _la.cholesky(ctx.inputs[0])
    product = L.transpose(-1, -2).matmul(g.transpose(-1, -2) if ctx.derivative.upper else g)
    phi = product.tril() - 0.5 * _s.diag_embed(product.diagonal(0, -2, -1))
    L_inverse = _la.inv(L)
    gA = L_inverse.transpose(-1, -2).matmul(phi).matmul(L_inverse)
    return 0.5 * (gA + gA.transpose(-1, -2))


def _cholesky_solve(ctx, g):
    """cholesky_solve_backward: gB = cholesky_solve(grad, L), C = gB X^H + (gB X^H)^H, gL = -C L (-L C for
    an upper factor), X recomputed."""
    (B, L), (nb, nl), upper = ctx.inputs, ctx.needs_input_grad, ctx.derivative.upper
    gB = _la.cholesky_solve(g, L, upper)
    common = gB.matmul(_la.cholesky_solve(B, L, upper).transpose(-1, -2))
    common = common + common.transpose(-1, -2)
    gL = -(L.matmul(common)) if upper else -(common.matmul(L))
    return (sum_to(gB, B.shape) if nb else None), (sum_to(gL, L.shape) if nl else None)


def _cholesky_inverse(ctx, g):  # cholesky_inverse_backward: C = A^-1 (grad + grad^H) A^-1, gL = -C L (-L C)
    L, upper = ctx.inputs[0], ctx.derivative.upper
    inverse = _la.cholesky_inverse(L, upper)
    common = inverse.matmul((g + g.transpose(-1, -2)).matmul(inverse))
    return -(L.matmul(common)) if upper else -(common.matmul(L))


def _solve_triangular(ctx, g):
    """linalg_solve_triangular_backward: gB = solve_triangular(A^H, grad) (the other triangle), gA = -gB X^H
    (-X^H gB for left=False) kept to A's triangle (strictly, for a unit diagonal); X recomputed."""
    (A, B), (na, nb), options = ctx.inputs, ctx.needs_input_grad, ctx.derivative.options
    upper, left, unit = options["upper"], options["left"], options["unitriangular"]
    gB = _la.solve_triangular(A.transpose(-1, -2), g, upper=not upper, left=left, unitriangular=unit)
    X_t = _la.solve_triangular(A, B, **options).transpose(-1, -2)
    gA = -(gB.matmul(X_t)) if left else -(X_t.matmul(gB))
    gA = gA.triu(1 if unit else 0) if upper else gA.tril(-1 if unit else 0)
    return (sum_to(gA, A.shape) if na else None), (sum_to(gB, B.shape) if nb else None)


# ---- the factorizations: each backward on ops, reading the forward's own U, S, V (Q, R; L, U) through their
# nodes (_reattached), so a second derivative runs the first-order formula again -------------------------------
class _FactorNodes(threading.local):
    """The factorizations' output nodes in the recorded pass running on this thread, by (their outputs
    tuple, index): found among the pass's nodes, so nothing links the sibling nodes (no reference cycle)."""
    now = None


_factor_nodes = _FactorNodes()


def _reattached(ctx, i):
    """Output ``i`` of the factorization this node is one output of, as a tensor in the graph: on that output's
    own node, as torch unpacks a saved output with its grad_fn (so every use of it meets in one node, which
    eig's phase check needs), or, where that node is gone (an output nobody kept), on a new node with the
    same arrays and derivative. No recomputation: LAPACK's signs stay."""
    node = _factor_nodes.now.get((id(ctx.outputs), i)) if _factor_nodes.now else None
    if node is not None and not node.freed:
        return Tensor._make(ctx.outputs[i], node.device, True, node)
    out = _la.LinalgOutput.apply(*ctx.inputs, outputs=ctx.outputs, index=i, derivative=ctx.derivative,
                                 formula=ctx.formula)
    return _t.name_node(out, ctx.formula, *ctx.inputs)


def _output_grads(ctx, g):
    """The node's gradient in its output's place, None in the others': each formula is linear in the output
    gradients, so the factorization's nodes each give their share and the shares add up to torch's gA."""
    grads = [None] * len(ctx.outputs)
    grads[ctx.index] = g
    return grads


def _gaps(values):
    """``E[..., i, j] = values[j] - values[i]``, with 1 on the diagonal (0 there, and never divided by)."""
    eye = _constant(values._device.xp.eye(values.shape[-1], dtype=values._array.dtype), values)
    return values.unsqueeze(-2) - values.unsqueeze(-1) + eye


def _skew(X):
    return X - X.mT


def _svd(ctx, g):
    """svd_backward (real), A = U diag(S) Vh with k = min(m, n) vectors (full_matrices: the rest get none):

        gA = U [ (skew(U^T gU) diag(S) + diag(S) skew(Vh gVh^T)) / F + diag(gS) ] Vh,   F[i, j] = S_j^2 - S_i^2

    (the F-matrix: 1 / (S_j^2 - S_i^2) is how fast the singular vectors turn as A changes), plus what lies
    outside U's (V's) span: (I - U U^T) gU S^-1 Vh for a tall A, U S^-1 gVh (I - Vh^T Vh) for a wide one.
    svdvals (gS alone): U diag(gS) Vh, U and Vh recomputed (the same LAPACK call: the same vectors)."""
    if len(ctx.outputs) == 1:
        U, S, Vh = _la.svd(ctx.inputs[0], full_matrices=False)
        gU, gS, gVh = None, g, None
    else:
        (U, S, Vh), (gU, gS, gVh) = (_reattached(ctx, i) for i in range(3)), _output_grads(ctx, g)
    k = S.shape[-1]
    U, Vh = U[..., :k], Vh[..., :k, :]
    if gU is None and gVh is None:
        return U.mul(gS.unsqueeze(-2)).matmul(Vh)
    m, n = U.shape[-2], Vh.shape[-1]
    if gU is not None:
        gU = gU[..., :k]
        inner = _skew(U.mT.matmul(gU)) * S.unsqueeze(-2)
        gA = inner / _gaps(S * S)
        if m > k:  # [U gA + (I - U U^T) gU S^-1] Vh
            gU_over_S = gU / S.unsqueeze(-2)
            return (U.matmul(gA) + gU_over_S - U.matmul(U.mT.matmul(gU_over_S))).matmul(Vh)
    else:
        gVh = gVh[..., :k, :]
        inner = S.unsqueeze(-1) * _skew(Vh.matmul(gVh.mT))
        gA = inner / _gaps(S * S)
        if n > k:  # U [gA Vh + S^-1 gVh (I - Vh^T Vh)]
            gVh_over_S = gVh / S.unsqueeze(-1)
            return U.matmul(gA.matmul(Vh) + gVh_over_S - gVh_over_S.matmul(Vh.mT).matmul(Vh))
    return U.matmul(gA.matmul(Vh))


def _eigh(ctx, g):
    """linalg_eig_backward for a symmetric A = V diag(L) V^T (real):

        gA = V [ diag(gL) + (skew(V^T gV) / 2) / E ] V^T,   E[i, j] = L_j - L_i

    (first-order perturbation theory: eigenvector i turns towards j at 1 / (L_j - L_i)). eigvalsh (gL alone):
    V diag(gL) V^T, V recomputed with the same UPLO (the same LAPACK call: the same vectors)."""
    if len(ctx.outputs) == 1:
        L, V = _la.eigh(ctx.inputs[0], UPLO=ctx.derivative.uplo)
        gL, gV = g, None
    else:
        (L, V), (gL, gV) = (_reattached(ctx, i) for i in range(2)), _output_grads(ctx, g)
    if gV is None:
        return V.mul(gL.unsqueeze(-2)).matmul(V.mT)
    inner = 0.5 * _skew(V.mT.matmul(gV)) / _gaps(L)
    return V.matmul(inner.matmul(V.mT))


def _qr_square(Q, R, gQ, gR):
    """linalg_qr_backward for m >= n (Q m x n, R n x n): with M = gR R^T - Q^T gQ,

        gA = [gQ + Q copyltu(M)] R^-T,   copyltu(M) = triu(M) + triu(M, 1)^T

    (M's upper triangle mirrored: the symmetric part that keeps Q orthonormal and R upper triangular)."""
    M = 0
    if gR is not None:
        M = gR.matmul(R.mT)
    if gQ is not None:
        M = M - Q.mT.matmul(gQ)
    gA = Q.matmul(M.triu() + M.triu(1).mT)
    if gQ is not None:
        gA = gA + gQ
    return _la.solve(R, gA.mT).mT  # gA R^-T


def _qr(ctx, g):
    """linalg_qr_backward (real): m >= n as _qr_square; m < n splits R = [X | Y] (A = [Q X | Q Y]): X's
    part is the square case with gQ + (Q Y) gY^T, Y's part Q gY."""
    A = ctx.inputs[0]
    m, n = A.shape[-2:]
    mode = ctx.derivative.mode
    _la._check_qr_differentiable(mode == "r", mode == "complete" and m > n)
    (Q, R), (gQ, gR) = (_reattached(ctx, i) for i in range(2)), _output_grads(ctx, g)
    if m >= n:
        return _qr_square(Q, R, gQ, gR)
    X, gX, gY = R[..., :, :m], None if gR is None else gR[..., :, :m], None if gR is None else gR[..., :, m:]
    if gY is not None:
        gQ = Q.matmul(R[..., :, m:]).matmul(gY.mT)
    gXA = _qr_square(Q, X, gQ, gX)
    gYA = Q.matmul(gY) if gY is not None else _constant(
        g._device.xp.zeros(A.shape[:-1] + (n - m,), g._array.dtype), g)
    return _s.cat([gXA, gYA], -1)


def _lower_solve_right(U, B):
    """B U^-T (U upper triangular: U^T lower)."""
    return _la.solve_triangular(U.mT, B, upper=False, left=False)


def _unit_upper_solve(L, B):
    """L^-T B (L unit lower triangular: L^T unit upper)."""
    return _la.solve_triangular(L.mT, B, upper=True, unitriangular=True)


def _zeros_beside(gA, rows, cols, axis):
    zeros = _constant(gA._device.xp.zeros(gA.shape[:-2] + (rows, cols), gA._array.dtype), gA)
    return _s.cat([gA, zeros], axis)


def _lu_formula(P, L, U, gL, gU):
    """linalg_lu_backward (real), A = P L U, L m x k unit lower, U k x n upper. Square:

        gA = P L^-T [ tril(L^T gL, -1) + triu(gU U^T) ] U^-T

    (each factor's gradient kept to the triangle it can move in). Wide (m < n) and tall (m > n) A: the same on
    the square k x k block, the extra columns of U (rows of L) passed through, as torch's."""
    m, k = L.shape[-2:]
    n = U.shape[-1]
    if m == n:
        gA = L.mT.matmul(gL).tril(-1) if gL is not None else 0
        if gU is not None:
            gA = gA + gU.matmul(U.mT).triu()
        return P.matmul(_unit_upper_solve(L, _lower_solve_right(U, gA)))
    if m < n:
        gA = L.mT.matmul(gL) if gL is not None else 0
        if gU is not None:
            gA = gA - gU.triu().matmul(U.mT)
        gA = _lower_solve_right(U[..., :, :k], gA.tril(-1))
        if gU is not None:
            gA = _s.cat([gA + gU[..., :, :k].triu(), gU[..., :, k:]], -1)
        gA = _unit_upper_solve(L, gA)
        return P.matmul(gA if gU is not None else _zeros_beside(gA, m, n - k, -1))
    gA = gU.matmul(U.mT) if gU is not None else 0
    if gL is not None:
        gA = gA - L.mT.matmul(gL.tril(-1))
    gA = _unit_upper_solve(L[..., :k, :], gA.triu())
    if gL is not None:
        gA = _s.cat([gA + gL[..., :k, :].tril(-1), gL[..., k:, :]], -2)
    gA = _lower_solve_right(U, gA)
    return P.matmul(gA if gL is not None else _zeros_beside(gA, m - k, n, -2))


def _lu(ctx, g):  # linalg.lu: P (a constant), L and U
    (_, L, U), (_, gL, gU) = (_reattached(ctx, i) if i else None for i in range(3)), _output_grads(ctx, g)
    return _lu_formula(_constant(ctx.outputs[0], g), L, U, gL, gU)


def _lu_factor(ctx, g):
    """lu_factor_ex_backward: LU unpacked with ops (L = tril(LU, -1) + I, U = triu(LU)), LU's gradient split
    into L's columns and U's rows."""
    P, L, U = _la.lu_unpack(_reattached(ctx, 0), _constant(ctx.derivative.pivots, g))
    k = min(g.shape[-2:])
    return _lu_formula(P, L, U, g[..., :, :k], g[..., :k, :])


def _pinv(ctx, g):
    """pinv_backward (real), with A+ the node's own output put back in the graph; for m <= n, K = g^T A+:

        gA = -(A+ K)^T + K A+^T - (A A+) K A+^T + (A+^T A+) (g^T - K A)

    (and the mirror image for m > n, K = A+ g^T)."""
    A, pinvA = ctx.inputs[0], _reattached(ctx, 0)
    m, n = A.shape[-2:]
    pinvAh, gh = pinvA.mT, g.mT
    if m <= n:
        K = gh.matmul(pinvA)
        KpinvAh = K.matmul(pinvAh)
        return -(pinvA.matmul(K)).mT + KpinvAh - A.matmul(pinvA).matmul(KpinvAh) + pinvAh.matmul(pinvA).matmul(
            gh - K.matmul(A))
    K = pinvA.matmul(gh)
    pinvAhK = pinvAh.matmul(K)
    return -(K.matmul(pinvA)).mT + (gh - A.matmul(K)).matmul(pinvA).matmul(pinvAh) + pinvAhK - pinvAhK.matmul(
        pinvA).matmul(A)


def _matrix_exp(ctx, g):
    """matrix_exp_backward: the upper-right block of exp([[A^T, g], [0, A^T]]) (the Frechet derivative of
    exp in the direction g, adjoint), with matrix_exp itself: differentiable again."""
    At = ctx.inputs[0].mT
    zeros = _constant(g._device.xp.zeros(g.shape, g._array.dtype), g)
    big = _s.cat([_s.cat([At, g], -1), _s.cat([zeros, At], -1)], -2)
    n = g.shape[-1]
    return _la.matrix_exp(big)[..., :n, n:]


def _complex():
    from .. import complex_numbers  # (it imports the ops: loaded when a recorded pass meets complex numbers)
    return complex_numbers


def _complex_solve(M, B):
    """Z with M Z = B for complex M and B, as the real system [[Re M, -Im M], [Im M, Re M]] [Re Z; Im Z] =
    [Re B; Im B] (minilora's solve is real: this one is recorded, differentiable in M and B)."""
    cn, n = _complex(), M.shape[-1]
    P, Q = cn.real(M), cn.imag(M)
    big = _s.cat([_s.cat([P, -Q], -1), _s.cat([Q, P], -1)], -2)
    Z = _la.solve(big, _s.cat([cn.real(B), cn.imag(B)], -2))
    return cn.complex(Z[..., :n, :], Z[..., n:, :])


def _eig(ctx, g):
    """linalg_eig_backward (real A, complex L and V), with V^H = conj(V)^T:

        gA = V^-H [ diag(gL) + (V^H gV - V^H V Re(diag(V^H gV))) / conj(E) ] V^H,   E[i, j] = L_j - L_i

    (the eigenvectors' part projected off what their unit norm and free phase cannot change); the engine
    keeps its real part for the real A. eigvals (gL alone): V^-H diag(gL) V^H, V recomputed (the same LAPACK
    call: the same vectors)."""
    cn = _complex()
    if len(ctx.outputs) == 1:
        L, V = _la.eig(ctx.inputs[0])
        gL, gV = g, None
    else:
        (L, V), (gL, gV) = (_reattached(ctx, i) for i in range(2)), _output_grads(ctx, g)
    VH = cn.conj(V).mT
    if gV is None:
        inner = _s.diag_embed(gL)
    else:
        VHgV = VH.matmul(gV)
        diagonal = VHgV.diagonal(0, -2, -1)
        _la._refuse_phase_dependent(diagonal._array)
        VHgV = VHgV - VH.matmul(V * cn.real(diagonal).unsqueeze(-2))
        inner = VHgV / _gaps(cn.conj(L))
    return _complex_solve(VH, inner.matmul(VH))


def _slogdet(ctx, g):  # logabsdet: grad * A^-H; the sign (a step function): no gradient, as torch's
    return _per_matrix(g) * _inverse_t(ctx) if ctx.index == 1 else None


_LINALG = {  # torch's node -> its derivatives.yaml formula on ops
    "LinalgInvExBackward0": lambda ctx, g: -(_inverse_t(ctx).matmul(g).matmul(_inverse_t(ctx))),  # -A^-H grad A^-H
    "LinalgDetBackward0": _det,
    "LinalgSlogdetBackward0": _slogdet,
    "LogdetBackward0": lambda ctx, g: _per_matrix(  # the same, none where det < 0
        _e.where(_constant(~ctx.derivative.negative, g), g, 0.0)) * _inverse_t(ctx),  # (torch: a where too)
    "LinalgSolveExBackward0": _solve,
    "LinalgCholeskyExBackward0": _cholesky,
    "CholeskySolveBackward0": _cholesky_solve, "CholeskyInverseBackward0": _cholesky_inverse,
    "LinalgSolveTriangularBackward0": _solve_triangular,
    "LinalgSvdBackward0": _svd, "LinalgEighBackward0": _eigh, "LinalgQrBackward0": _qr,
    "LinalgLuBackward0": _lu, "LinalgLuFactorExBackward0": _lu_factor, "LinalgPinvBackward0": _pinv,
    "LinalgMatrixExpBackward0": _matrix_exp, "LinalgEigBackward0": _eig,
}


def _linalg_output(ctx, g):
    formula = _LINALG.get(ctx.formula)
    if formula is None:
        if getattr(ctx.derivative, "torch_refuses", False):  # (ldl: torch has no derivative at all; its words)
            ctx.derivative(ctx.arrays, ctx.outputs, _output_grads(ctx, g._array))
        _refuse(ctx)
    grads = formula(ctx, g)
    return grads if isinstance(grads, tuple) else (grads,) + (None,) * (len(ctx.inputs) - 1)


def _vector_norm(ctx, g):
    """torch's norm_backward on ops, every order, as torch writes it (so that it differentiates again as
    torch's): p = 0 no gradient; p = 1 ``sgn(x) g``; p = 2 ``g (x / norm)`` masked to 0 where the norm is 0;
    +-inf ``sgn(x) g / count`` at the elements whose |x| is the norm (or nan); p < 1 ``sgn(x) |x|^(p-1) g
    norm^(1-p)`` with |x|^(p-1) masked to 0 at x = 0; 1 < p < 2 ``sgn(x) |x|^(p-1)``, p > 2 ``x |x|^(p-2)``,
    times ``g / norm^(p-1)`` masked to 0 where the norm is 0. The norm is the node's result recomputed on ops;
    masks and signs are constants, as torch's (a zero vector's second derivative is torch's nan)."""
    x, p = ctx.inputs[0], ctx.ord
    axes = tuple(range(x.ndim)) if ctx.dims is None else tuple(sorted(d % x.ndim for d in ctx.dims))
    if not ctx.keepdim:
        for axis in axes:
            g = g.unsqueeze(axis)
    if p == 0:  # (no gradient, as the plain engine's VectorNorm)
        return None
    sign = _e._torch_sign(ctx.x)
    if p == 1:
        return _step_scaled(g.expand(*x.shape), x, sign)
    if math.isinf(p):
        maxima = (np.abs(ctx.x) == ctx.out.reshape(_kept_shape(ctx.x.shape, axes))) | np.isnan(ctx.x)
        count = _constant(maxima.sum(axis=axes, keepdims=True).astype(ctx.x.dtype), g)
        return _step_scaled((g / count).expand(*x.shape), x, sign * maxima)
    norm = _la.VectorNorm.apply(x, ord=p, dims=ctx.dims, keepdim=True)
    none = _constant(np.zeros((), ctx.x.dtype), g)
    where_norm_is_0 = _constant(norm._array == 0, g)  # (torch's masked_fill_(norm == 0, 0): a nan past it
    if p == 2:  # differentiates as torch's, 0 / 0 at a zero vector)
        return g * _e.where(where_norm_is_0, none, x / norm)
    if p < 1:
        powered = _e.where(_constant(ctx.x == 0, g), none, x.abs() ** (p - 1))
        return _step_scaled(powered, x, sign) * g * norm ** (1 - p)
    scaled = _step_scaled(x.abs() ** (p - 1), x, sign) if p < 2 else x * x.abs() ** (p - 2)
    return scaled * _e.where(where_norm_is_0, none, g / norm ** (p - 1))


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _fused_mul_add(ctx, g):  # c + value * a * b (float32 addcmul): g, g * (b * value), g * (a * value)
    (c, a, b), (nc, na, nb) = ctx.inputs[:3], ctx.needs_input_grad[:3]
    value = getattr(ctx, "value", 1)
    return (sum_to(g, ctx.c_shape) if nc else None, sum_to(g * (b * value), _shape(a)) if na else None,
            sum_to(g * (a * value), _shape(b)) if nb else None)


def _addcdiv(ctx, g):  # c + value * a / b: g, g * (value / b), -g * ((value * a) / (b * b))
    (c, a, b), (nc, na, nb) = ctx.inputs[:3], ctx.needs_input_grad[:3]
    value = float(ctx.value)
    return (sum_to(g, ctx.c_shape) if nc else None, sum_to(g * (value / b), _shape(a)) if na else None,
            sum_to(-g * ((value * a) / (b * b)), _shape(b)) if nb else None)


def _add_scaled(ctx, g):  # a + alpha * b (16-bit add/sub with alpha): g, alpha * g
    na, nb = ctx.needs_input_grad
    return (sum_to(g, ctx.shapes[0]) if na else None, sum_to(g * float(ctx.alpha), ctx.shapes[1]) if nb else None)


def _windows_jvp(ctx, d):
    """Tensor.unfold itself (linear): the windows of ``d``, copied out of the strided view."""
    return _s.Unfold.forward(_Scratch(), d, ctx.axis, ctx.size, ctx.step).copy()


def _as_strided_scatter_jvps():
    def jvp_self(ctx, d):
        out = d.reshape(-1).copy()
        out[ctx.taken] = 0
        return out.reshape(d.shape)

    def jvp_src(ctx, d):
        out = _zeros_out(ctx, d).reshape(-1)
        out[ctx.taken] = d.reshape(-1)
        return out.reshape(tuple(ctx.inputs[0].shape))
    return jvp_self, jvp_src


class DelayedError(Function):
    """torch's DelayedError node: a gradient torch computes but cannot differentiate again (a once_differentiable
    backward's result, the CTC loss's gradient), hung on the tensors it came from (``sources``); a second
    derivative that reaches it raises ``message``, torch's words, and one that does not goes on."""

    @staticmethod
    def forward(ctx, r, *sources, message, error=RuntimeError):
        ctx.message, ctx.error = message, error
        return r

    @staticmethod
    def backward(ctx, g):
        raise ctx.error(ctx.message)

    backward_graph = backward


class ReadsInputs(Function):
    """``g`` passed through, recorded with the inputs torch's backward function reads (tensor.backward_reads):
    the gradient of hardtanh, a reflection pad or nll_loss requires grad where the input does, as torch's
    (its derivative there zeros), and a convolution's or a norm's bias gradient where the input or weight
    does (its derivative there none). Without it a gradient that minilora's formula makes from constants
    would be a constant, where torch's is in the graph."""
    complex_grad = True  # (the identity in g)

    @staticmethod
    def forward(ctx, g, *reads, zeros):
        ctx.shapes, ctx.zeros = [r.shape for r in reads], zeros
        return g.copy()  # (its own storage: an output sharing its input's would be taken for a view)

    @staticmethod
    def backward(ctx, gg):
        xp = _e.xp_of(gg)
        return (gg, *(xp.zeros(shape, gg.dtype) if ctx.zeros else None for shape in ctx.shapes))

    @staticmethod
    def backward_graph(ctx, gg):
        zeros = ReadsInputs.backward(ctx, gg._array)[1:]
        return (gg, *(None if z is None else _constant(z, gg) for z in zeros))


def _reading(ctx, in_grads):
    """The node's gradients joined to the inputs its torch backward reads, where the op declared them."""
    reads, zeros = ctx.backward_reads
    return tuple(None if g is None else ReadsInputs.apply(g, *reads, zeros=zeros) for g in in_grads)


def _not_in_torch_either(aten_backward, error=RuntimeError):
    """The recorded backward of an op whose backward torch cannot differentiate: the plain pass's gradients,
    each a DelayedError on the incoming gradient and the input. torch words it two ways: a RuntimeError from
    its generated code (``derivative for aten::X``), a NotImplementedError from derivatives.yaml's
    ``not_implemented`` (``the derivative for 'X'``)."""
    message = str(no_derivative_error(aten_backward, error))

    def backward_graph(ctx, g):
        grads = ctx.fn.backward(ctx, g._array)
        grads = grads if isinstance(grads, tuple) else (grads,)
        return tuple(DelayedError.apply(_constant(a, g), g, x, message=message, error=error)
                     if need and a is not None else None
                     for a, x, need in zip(grads, ctx.inputs, ctx.needs_input_grad))
    return backward_graph


_BACKWARD_GRAPHS = {
    _e.Add: _add, _e.Sub: _sub, _e.Mul: _mul, _e.Div: _div, _e.Pow: _pow,
    _e.Neg: lambda ctx, g: -g,
    _e.Exp: lambda ctx, g: g * ctx.inputs[0].exp(),
    _e.Log: lambda ctx, g: g / ctx.inputs[0],
    _e.Sqrt: lambda ctx, g: g / (2 * ctx.inputs[0].sqrt()),
    _e.Rsqrt: lambda ctx, g: g * -0.5 * ctx.inputs[0].rsqrt() ** 3,
    _e.Tanh: lambda ctx, g: g * (1 - ctx.inputs[0].tanh() ** 2),
    _e.Sigmoid: lambda ctx, g: g * ctx.inputs[0].sigmoid() * (1 - ctx.inputs[0].sigmoid()),
    _e.Relu: lambda ctx, g: _step_scaled(g, ctx.inputs[0], ~(ctx.out <= 0)),
    _e.LeakyRelu: _leaky_relu, _e.Gelu: _gelu, _e.Silu: _silu, _e.Softplus: _softplus,
    _e.Sin: lambda ctx, g: g * ctx.inputs[0].cos(),
    _e.Cos: lambda ctx, g: -g * ctx.inputs[0].sin(),
    _e.Abs: _abs,
    _e.Erf: lambda ctx, g: g * float(2 / np.sqrt(np.pi)) * (-ctx.inputs[0] * ctx.inputs[0]).exp(),
    _e.Clone: lambda ctx, g: g,
    KernelGradients: lambda ctx, g: (g, None, None, None),  # (the composed graph, differentiable again)
    ConvBias: lambda ctx, g: (g, g.sum((0,) + tuple(range(2, g.ndim)))),
    _s.RecordedCopy: lambda ctx, g: _s.RecordedCopy.apply(g),
    _e.AsType: lambda ctx, g: ((g.real if g.is_complex() and ctx.dtype.kind != "c" else g).to(ctx.dtype), None),
    _e.PromotionCast: lambda ctx, g: ((g.real if g.is_complex() and ctx.dtype.kind != "c" else g).to(ctx.dtype), None),
    _r.Sum: _sum, _r.Mean: _mean, _r.Softmax: _softmax, _r.SafeSoftmax: _safe_softmax, _r.LogSoftmax: _log_softmax,
    _s.Reshape: _reshape,
    _s.Permute: _permute, _s.GetItem: _getitem, _s.Cat: _cat,
    _s.Expand: _expand,
    MatMul: _matmul, Linear: _linear,
    CrossEntropy: _cross_entropy, LayerNorm: _layer_norm,
    # (siblings the first list left out: what the same models and losses also reach)
    _e.Where: _where, _e.Maximum: _maximum, _e.Clamp: _clamp, _e.Elu: _elu,
    _e.Log1p: lambda ctx, g: g / (1 + ctx.inputs[0]),
    _e.Expm1: lambda ctx, g: g * ctx.inputs[0].exp(),
    _e.LogSigmoid: lambda ctx, g: g * (-ctx.inputs[0]).sigmoid(),
    _r.LogSumExp: _logsumexp, _r.Var: _var, _r.AMax: _amax, _r.PNorm: _pnorm,
    SwiGLU: _swiglu, RMSNorm: _rms_norm, Glu: _glu, _x.Sinc: _sinc, PRelu: _prelu,
    SmoothL1Loss: _piecewise_loss(lambda ctx, d: _e.where(d.abs() >= ctx.beta, d.sign(), d / ctx.beta)),
    HuberLoss: _piecewise_loss(lambda ctx, d: d.clamp(-ctx.delta, ctx.delta)),
    MseLoss: _piecewise_loss(lambda ctx, d: 2 * d),
    Cross: lambda ctx, g: (sum_to(_cross_of(ctx.inputs[1], g, ctx.dim), _shape(ctx.inputs[0])) if ctx.needs_input_grad[0]
                           else None,
                           sum_to(_cross_of(g, ctx.inputs[0], ctx.dim), _shape(ctx.inputs[1])) if ctx.needs_input_grad[1]
                           else None),
    Embedding: lambda ctx, g: (None, EmbeddingGrad.apply(g, ctx)),
    Gather: _gather, IndexSelect: _index_select, Pad: _pad, CumSum: _cumsum,
    _s.Flip: lambda ctx, g: (g.flip(ctx.dims), None),
    Unfold: _unfold, Fold: _fold, Conv2d: _conv2d, SlowConv2d: _slow_conv2d,
    Dropout: lambda ctx, g: g * _constant(ctx.mask, g), NllLoss: _nll_loss,
    BinaryCrossEntropyWithLogits: _bce_with_logits, BinaryCrossEntropy: _bce, BinaryCrossEntropyLoss: _bce_loss,
    Attention: _attention, FlashAttention32: _attention, Rotary: _rotary,
    _e.Hardswish: _hardswish, _e.Hardsigmoid: _hardsigmoid, _e.Mish: _mish,
    _e.Atan2: _atan2, _e.Hypot: _hypot, _e.Lerp: _lerp, _e.Logit: _logit, _e.XLogY: _xlogy,
    _e._Rounding: lambda ctx, g: (_constant(g._device.xp.zeros(ctx.shape, g._array.dtype), g), None, None),
    Einsum: _einsum, Trilinear: _trilinear,
    MaxPool2d: _pooling(_max_pool_jvp, MaxPool2d), AvgPool2d: _pooling(_avg_pool_jvp, AvgPool2d),
    AdaptiveAvgPool2d: _pooling(_adaptive_avg_pool_jvp, AdaptiveAvgPool2d),
    AvgPool3d: _pooling(lambda ctx, x: AvgPool3d.forward(_Scratch(), x, **ctx.replay), AvgPool3d),
    AdaptiveAvgPool3d: _pooling(lambda ctx, x: AdaptiveAvgPool3d.forward(_Scratch(), x, ctx.cells), AdaptiveAvgPool3d),
    LinearResize: lambda ctx, g: LinearPair.apply(g, ctx, lambda node, x: LinearResize.forward(_Scratch(), x, node.sources, node.kernel),
                                                  _first(LinearResize)),  # (torch's formula reads no input)
    GridSampleBilinear2d: _grid_sample_bilinear, GridSampleTrilinear3d: _grid_sample_bilinear,
    CubicResize: lambda ctx, g: LinearPair.apply(
        g, ctx, lambda node, x: CubicResize.forward(_Scratch(), x, node.taps, node.backward_taps), _first(CubicResize)),
    NearestResize: lambda ctx, g: LinearPair.apply(g, ctx, lambda node, x: NearestResize.forward(_Scratch(), x, node.sources),
                                                   _first(NearestResize)),
    LoraLinear: _lora_linear,
    _e.LogAddExp: _logaddexp, _e.LogAddExp2: _logaddexp2,
    _e.LogBase: lambda ctx, g: (g / (ctx.inputs[0] * float(np.log(ctx.base))), None),
    _e.NanToNum: lambda ctx, g: (_masked(g, ctx.finite), None, None, None),
    _s.IndexPut: _index_put, _s.Roll: _roll,
    _s.Diagonal: lambda ctx, g: (LinearPair.apply(g, ctx, _diagonal_jvp, _first(_s.Diagonal)), None, None, None),
    Repeat: _repeat,
    # (the special functions, products, transposed convolution, the scatter and index_* family)
    _e.Pointwise: _pointwise,
    _sp.Erfc: lambda ctx, g: -2 / float(np.sqrt(np.pi)) * (-ctx.inputs[0] ** 2).exp() * g,
    _sp.Erfinv: lambda ctx, g: 0.5 * float(np.sqrt(np.pi)) * (ctx.inputs[0].erfinv() ** 2).exp() * g,
    _sp.Lgamma: lambda ctx, g: g * ctx.inputs[0].digamma(),
    _sp.Polygamma: lambda ctx, g: (g * _sp.polygamma(ctx.n + 1, ctx.inputs[0]), None),
    _sp.I0: lambda ctx, g: g * _sp.i1(ctx.inputs[0]),
    _sp.I0e: lambda ctx, g: g * (_sp.i1e(ctx.inputs[0]) - ctx.inputs[0].sgn() * _sp.i0e(ctx.inputs[0])),
    _sp.I1: _i1, _sp.I1e: _i1e,
    _sp.Ndtri: lambda ctx, g: g * float(np.sqrt(2 * np.pi)) * (_sp.ndtri(ctx.inputs[0]) ** 2 / 2).exp(),
    _sp.LogNdtr: lambda ctx, g: g / float(np.sqrt(2 * np.pi)) * (
        -(_sp.log_ndtr(ctx.inputs[0]) + ctx.inputs[0] ** 2 / 2)).exp(),
    _sp.Erfcx: lambda ctx, g: (2.0 * ctx.inputs[0] * _sp.erfcx(ctx.inputs[0]) - 2 / float(np.sqrt(np.pi))) * g,
    _sp.XLog1pY: _xlog1py, _sp.Zeta: _zeta, _ig.Igamma: _igamma,
    _r.Prod: _prod, CumProd: _cumprod, _r.LogCumSumExp: _logcumsumexp,
    ConvTranspose2d: _conv_transpose2d, SlowConvTranspose2d: _slow_conv_transpose2d,
    _e.Remainder: _remainder,  # (and Fmod, its subclass)
    _e.RoundedDiv: _zeros_for_each,
    Nextafter: lambda ctx, g: (sum_to(_masked(g, ctx.moves), ctx.shapes[0]),  # (other's: zeros_like, a constant)
                               _constant(g._device.xp.zeros(ctx.shapes[1], g._array.dtype), g)),
    _la.LinalgOutput: _linalg_output,  # (inv, det, solves, the factorizations)
    _la.VectorNorm: _vector_norm,
    _e.FusedMulAdd: _fused_mul_add, _e.AddcDiv: _addcdiv, _e.AddScaled: _add_scaled,
    _e.GradientPassesTo: lambda ctx, g: (g, sum_to(g, ctx.shape)),
    _e.ZeroGradientTo: lambda ctx, g: (g, _constant(g._device.xp.zeros(ctx.other_shape, g._array.dtype), g)),
    _s.Unfold: _linear_in_each(_windows_jvp), _s.AsStridedScatter: _linear_in_each(*_as_strided_scatter_jvps()),
    AdaptiveMaxPool2d: _pooling(_adaptive_max_pool_jvp, AdaptiveMaxPool2d),
    CTCLoss: _not_in_torch_either("_ctc_loss_backward"),
    Cdist: _not_in_torch_either("_cdist_backward", NotImplementedError),
    DenseBagGradient: _not_in_torch_either("_embedding_bag_backward", NotImplementedError),
    MaxUnpool2d: _linear_in_each(_unpool_adjoint),  # (1d, 3d)
    _s.DiagEmbed: _linear_in_each(lambda ctx, d: _s.DiagEmbed.forward(_Scratch(), d, ctx.offset)),
    _s.AsStrided: _linear_in_each(_as_strided_jvp),
    MedianAll: _linear_in_each(_median_jvp),
    Scatter: lambda ctx, g: _linear_in_each(_unchanged if ctx.add else lambda ctx, d: _s.zeroed_at(d, ctx.where),
                                            lambda ctx, d: _written(ctx, d, ctx.where, d[ctx.block], ctx.add))(ctx, g),
    ScatterReduce: _scatter_reduce,
    IndexAdd: _linear_in_each(_unchanged, lambda ctx, d: _written(ctx, d, ctx.where, d * ctx.alpha, True)),
    IndexCopy: _linear_in_each(lambda ctx, d: _s.zeroed_at(d, ctx.where),
                               lambda ctx, d: _written(ctx, d, ctx.where, d)),
    IndexFill: _linear_in_each(lambda ctx, d: _s.zeroed_at(d, ctx.where),
                               lambda ctx, d: _written(ctx, d, ctx.where, d)),
    MaskedScatter: _linear_in_each(lambda ctx, d: _s.zeroed_at(d, ctx.mask),
                                   lambda ctx, d: _written(ctx, d, ctx.mask, d.reshape(-1)[:ctx.count])),
}
for _op, _fn in _BACKWARD_GRAPHS.items():
    _op.backward_graph = staticmethod(_fn)


# ---- the engine --------------------------------------------------------------------------------
def _refuse(ctx, complex_gradient=False):
    complex_values = complex_gradient or any(isinstance(x, Tensor) and x.dtype.kind == "c" for x in ctx.inputs)
    raise NotDifferentiableBackward(
        f"create_graph=True: {ctx.fn.__name__}'s backward is not differentiable in minilora (torch's "
        f"{ctx.name()})" + (" with complex tensors (linalg.eig's outputs, ...): minilora's recorded backward is "
                            "real only" if complex_values else "")
        + ": take the gradient without create_graph, or build the function from ops that have one")


def _nodes_of(roots):
    """Every node the roots' nodes were computed from, latest first (tensor.py's _topological_order
    for each root, merged: the same creation-number order)."""
    found = {}
    for root in roots:
        if root._ctx is not None and id(root._ctx) not in found:
            found.update((id(c), c) for c in _t._topological_order(root._ctx))
    return sorted(found.values(), key=lambda c: c.seq, reverse=True)


def _refuse_changed_inputs(ctx):
    """backward_graph recomputes from the node's input tensors, so one changed in place since the node ran
    would give a silently wrong gradient (torch's op may have saved its result instead and not mind):
    an error, naming the op and the way round."""
    then = ctx.versions or (0,) * len(ctx.inputs)
    for i, (x, version) in enumerate(zip(ctx.inputs, then)):
        if isinstance(x, Tensor) and x._version != version:
            raise RuntimeError(f"create_graph=True: input {i} of {ctx.name()} was changed in place after it ran "
                               f"(version {x._version}, expected {version}); minilora's recorded backward "
                               "recomputes from the inputs: change a clone() instead")


def _in_grads(ctx, g, retain_graph):
    """The node's ``backward_graph`` on ``g``, with what saved-tensor hooks packed unpacked for the call
    (as the plain engine's _node_backward does)."""
    backward_graph = getattr(ctx.fn, "backward_graph", None)
    complex_gradient = g.dtype.kind == "c"
    how = ctx.fn.complex_grad if complex_gradient else True
    if backward_graph is None or not how:
        _refuse(ctx, complex_gradient)
    packed = ctx.packed if _t._saved_hooks_used else None
    if packed is not None:
        _t._unpack_saved(ctx)
    if how == "holomorphic":  # (as the plain engine: the real formula on conj(g), conjugated: torch's convention)
        conj = _complex().conj
        in_grads = backward_graph(ctx, conj(g))
        in_grads = tuple(None if ig is None else conj(ig) for ig in (in_grads if type(in_grads) is tuple
                                                                      else (in_grads,)))
    else:
        in_grads = backward_graph(ctx, g)
    if packed is not None and retain_graph:
        _t._repack(ctx)
    in_grads = in_grads if type(in_grads) is tuple else (in_grads,)
    return _reading(ctx, in_grads) if "backward_reads" in ctx.__dict__ else in_grads


def _fit(g, x):
    if g.dtype.kind == "c" and x.dtype.kind != "c":  # (a real tensor takes the real part, as torch's)
        g = _complex().real(g)
    if tuple(g.shape) != tuple(x.shape):
        raise RuntimeError(f"internal error: gradient of shape {tuple(g.shape)} for a tensor of shape "
                           f"{tuple(x.shape)} (create_graph=True)")
    return g if g.dtype == x.dtype else g.to(x.dtype)


def _run_hooks(hooks, g):
    """``register_hook`` hooks on a recorded gradient ``g``, each result checked as the plain engine's."""
    for hook in list(hooks.values()):
        out = hook(g)
        if out is not None:
            g = _t.hook_result(hook, g, out)
    return g


def _leading_to(nodes, store):
    """``tensor._leading_to`` for the store's wanted tensors (``store.leaves``: leaf ids; ``store.nodes`` or
    ``store.input_nodes``: the non-leaf inputs' nodes); None: every node (``backward()`` without ``inputs``)."""
    leaves = getattr(store, "leaves", None)
    if leaves is None:
        return None
    return _t._leading_to(nodes, leaves, set(getattr(store, "nodes", None) or getattr(store, "input_nodes", ())))


def run_backward_graph(roots, seeds, retain_graph, store):
    """The backward pass from ``roots`` (tensors) with gradients ``seeds`` (tensors, maybe in a graph
    themselves: the double-vjp trick differentiates with respect to them), recorded. ``store.add(t, g)``
    takes each leaf's (and retain_grad() tensor's) gradient; ``store.nodes`` (optional) names non-leaf
    tensors' nodes whose gradient ``store.add_node(ctx, g)`` takes."""
    wanted = getattr(store, "nodes", None)
    nodes = _nodes_of(roots)
    leading = _leading_to(nodes, store)
    before, _factor_nodes.now = _factor_nodes.now, {
        (id(c.outputs), c.index): c for c in nodes if c.fn is _la.LinalgOutput}
    try:
        _run_nodes(nodes, leading, wanted, roots, seeds, retain_graph, store)
    finally:
        _factor_nodes.now = before


def _run_nodes(nodes, leading, wanted, roots, seeds, retain_graph, store):
    """run_backward_graph's walk over ``nodes`` (latest first)."""
    grads = {}
    with enable_grad():
        for root, seed in zip(roots, seeds):
            if root._ctx is None:
                store.add(root, seed)
            else:
                prev = grads.get(id(root._ctx))
                grads[id(root._ctx)] = seed if prev is None else prev + seed
        hooked = {}
        for ctx in nodes:
            g = grads.pop(id(ctx), None)
            if g is None:
                continue
            if wanted and id(ctx) in wanted:
                store.add_node(ctx, g)
            if ctx.retained is not None:
                if ctx.hooks:
                    g = _run_hooks(ctx.hooks, g)
                if ctx.retained() is not None:
                    store.add(ctx.retained(), g)
                if ctx.node_prehooks or ctx.node_hooks:
                    raise NotImplementedError("create_graph=True with grad_fn.register_hook/register_prehook "
                                              "is not supported in minilora")
            if leading is not None and id(ctx) not in leading:
                continue  # (a wanted non-leaf's node: nothing wanted lies past it)
            ctx._refuse_freed()
            if ctx.seq <= _t._last_change:  # something changed in place after this node was made
                _check_versions(ctx)
                _refuse_changed_inputs(ctx)
            if ctx.device is _t._META:  # (its forward ran on stand-ins: what it saves, made for this pass)
                _t._meta_ops.restore_saved(ctx)
            in_grads = _in_grads(ctx, g, retain_graph)
            for x, parent, need, ig in zip(ctx.inputs, ctx.parents, ctx.needs_input_grad, in_grads):
                if not need or ig is None:
                    continue
                ig = _fit(ig, x)
                if parent is None:
                    if not x._requires_grad:  # (a view that requires grad through its base only: no .grad)
                        continue
                    hooks = _t._hooked_leaf(x) if _t._leaf_hooks else None
                    if hooks is not None:
                        entry = hooked.setdefault(id(x), [x, None, hooks])
                        entry[1] = ig if entry[1] is None else entry[1] + ig
                    else:
                        store.add(x, ig)
                else:
                    prev = grads.get(id(parent))
                    grads[id(parent)] = ig if prev is None else prev + ig
            if not retain_graph:
                ctx.free()
        for leaf, g, hooks in hooked.values():
            if not hasattr(store, "takes") or store.takes(leaf):
                store.add(leaf, _run_hooks(hooks, g))


class GradStore:
    """``backward(create_graph=True)``: each leaf's ``.grad`` becomes (or has added to it, out of place,
    as torch's AccumulateGrad under create_graph) a gradient with its own graph. ``inputs``: only these."""

    def __init__(self, inputs=None):
        if inputs is not None:
            inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
            for t in inputs:
                if t._ctx is not None:
                    t.retain_grad()
        self.leaves = None if inputs is None else {id(t) for t in inputs if t._ctx is None}
        self.input_nodes = () if inputs is None else {id(t._ctx) for t in inputs if t._ctx is not None}

    def takes(self, t):
        return self.leaves is None or t._ctx is not None or id(t) in self.leaves

    def add(self, t, g):
        if self.takes(t):
            t._grad = g if t._grad is None else t._grad + g


__all__ = ["run_backward_graph", "GradStore", "NotDifferentiableBackward", "ScatterIndexed", "sum_to", "DelayedError"]


def seed(output, grad_output, index=0):
    """The gradient a recorded pass starts from: ones for a one-element output, else the caller's
    tensor itself (it may be in a graph: the double-vjp trick differentiates with respect to it)."""
    if grad_output is None:
        if output._array.size != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        return _constant(output._device.xp.ones_like(output._array), output)
    if not isinstance(grad_output, Tensor):
        grad_output = _constant(output._device.xp.asarray(grad_output), output)
    if tuple(grad_output.shape) != tuple(output.shape):
        raise _t.shape_mismatch(grad_output.shape, output.shape, index)
    return grad_output if grad_output.dtype == output.dtype else grad_output.to(output.dtype)


_warned_of_cycle = False  # has backward(create_graph=True) warned yet?


def backward(tensor, gradient, retain_graph, inputs):
    """``tensor.backward(gradient, create_graph=True)``: the leaves' ``.grad`` with graphs of their own
    (``retain_graph`` defaults to True then, as torch's)."""
    if not tensor.requires_grad:
        raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
    if isinstance(gradient, (int, float, complex, list, tuple, np.generic)):
        raise TypeError(f"gradients can be either Tensors or None, but got {type(gradient).__name__}")
    retain = True if retain_graph is None else bool(retain_graph)
    global _warned_of_cycle
    if not _warned_of_cycle:  # (torch's TORCH_WARN_ONCE: once per process)
        _warned_of_cycle = True
        warnings.warn("Using backward() with create_graph=True will create a reference cycle between the parameter "
                      "and its gradient which can cause a memory leak. We recommend using autograd.grad when creating "
                      "the graph to avoid this. If you have to use this function, make sure to reset the .grad fields "
                      "of your parameters to None after use to break the cycle and avoid the leak.", UserWarning,
                      stacklevel=3)  # (torch's words: each .grad now holds a graph that holds the parameter)
    with _t.backward_over_inputs(inputs is not None):
        run_backward_graph((tensor,), (seed(tensor, gradient),), retain, GradStore(inputs))
