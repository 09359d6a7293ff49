"""Neural-network ops with hand-derived, fused backward passes.

Each is one node in the graph instead of a dozen small ones: less memory (one saved array instead
of every intermediate) and fewer Python calls. The derivations are in the docstrings.
"""
import functools
import math
import types
import warnings

import numpy as np

from .. import amp as _amp, compiled_attention, fastmath, float32_math, float32_sums, parallel, solutions
from ..blas import matmul
from . import attention16, attention32, group_norm_channels_last as _channels_last
from .elementwise import Clone, _c_log
from .matmul import _bmm_message
from ..device import unwritten_zeros, xp_of
from ..size import torch_spelling
from ..factories import composed_layout, composed_layout_unknown, in_iterator_layout, in_layout_of, layout_order
from ..factories import known_strides, laid_out_in_strides, layout_is_known, suggested_format
from ..dtypes import (bool_argument, checked_number, compute_dtype, float32, int_argument, int_arguments, is_floating,
                      python_number, promote_types, refuse_complex, result_type, torch_name, upcast)
from .. import random as _random
from ..tensor import (Function, ShapeError, Tensor, backward_reads, forward_ad_open, name_node, no_complex_autograd,
                      no_forward_formula, no_grad, no_meta_positions, saved_for, saves_as_torch, saving_as_torch,
                      warn_at_caller)
from ..tensor import is_grad_enabled, torch_broadcast_message, with_note, _legacy_type

__all__ = ["embedding", "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "pad", "one_hot", "dropout", "rms_norm",
           "layer_norm", "rotary_embedding", "rotate_half", "scaled_dot_product_attention", "swiglu",
           "smooth_l1_loss", "huber_loss", "kl_div", "normalize", "cosine_similarity",
           "pairwise_distance", "margin_ranking_loss", "triplet_margin_loss", "cosine_embedding_loss",
           "batch_norm", "group_norm"]


# ---- 16-bit floats: computed in float32, rounded once ------------------------------------------
def _is_16bit_float(x):
    return isinstance(x, Tensor) and x.dtype.itemsize == 2 and is_floating(x.dtype)


def _check_parameter_dtypes(input, *params):
    """torch's CPU norm kernels take parameters (weight, bias, running statistics) of the input's dtype,
    or float32 ones for a float16/bfloat16 input, and raise for any other mix (a model cast with
    ``.double()`` fed a float32 batch); minilora's math would promote silently."""
    for param in params:
        if param is None or param.dtype == input.dtype or (param.dtype == float32 and _is_16bit_float(input)):
            continue
        if input.dtype == np.float64 and param.dtype == float32:
            raise RuntimeError("mixed dtype (CPU): all inputs must share same datatype.")
        raise RuntimeError(f"mixed dtype (CPU): expect parameter to have scalar type of Float (input "
                           f"{input.dtype}, parameter {param.dtype})")


def float32_inside(fn=None, *, promote=False):
    """Run ``fn`` (an op on tensors) as torch's CPU kernels run it for bfloat16/float16: in float32,
    with the result rounded to the 16-bit dtype once.

    When the first tensor argument (the input) is a 16-bit float, every 16-bit float tensor among
    the arguments goes in as a float32 cast and every floating result comes back cast to the
    input's dtype (``promote=True``, for the losses: to the dtype torch's promotion gives the
    floating tensors, and only if that is a 16-bit one). The casts are differentiable, so a backward
    also runs in float32 and each gradient is rounded once, into the 16-bit dtype of its tensor (as
    torch's bf16 grads). Computing the same op step by step in bfloat16 instead would round after
    every NumPy step (a layer norm: ~6 times) and sum in bfloat16 (which stops growing at 256 ones).
    float32/float64 inputs call ``fn`` as it is: a few ``isinstance`` checks, no copy.

    Ops that torch itself builds from several ops, each rounding to 16 bits (``mse_loss`` is
    ``(x - y)`` then its square, ``kl_div``, ``cosine_similarity``, ``normalize``, the margin losses;
    ``dropout`` multiplies by the scale ``1/(1-p)`` rounded to 16 bits), are built here from the same
    ops in the same order and do not use this: their numbers are torch's, bit for bit."""
    if fn is None:
        return functools.partial(float32_inside, promote=promote)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        first = next((a for a in args if isinstance(a, Tensor)), None)
        if first is None or not _is_16bit_float(first):
            return fn(*args, **kwargs)
        dtype = first.dtype
        if promote:
            dtype = result_type(*(a for a in (*args, *kwargs.values())
                                  if isinstance(a, Tensor) and is_floating(a.dtype)))
            if dtype.itemsize != 2:  # a float32 operand: the op promotes to it, as it is
                return fn(*args, **kwargs)
        args = [a.to(float32) if _is_16bit_float(a) else a for a in args]
        kwargs = {k: v.to(float32) if _is_16bit_float(v) else v for k, v in kwargs.items()}
        with np.errstate(all="ignore"):  # an inf from a 16-bit input: silently, as torch (see tensor.py)
            return _cast_floats(fn(*args, **kwargs), dtype)
    return wrapper


def _cast_floats(result, dtype):
    """``result`` (a tensor, or a tuple of them) with its floating tensors cast to ``dtype``."""
    if isinstance(result, tuple):
        return tuple(_cast_floats(r, dtype) for r in result)
    if isinstance(result, Tensor) and is_floating(result.dtype):
        return result.to(dtype)
    return result


class Embedding(Function):
    """``weight[ids]``; backward scatter-adds each row's gradient into the rows it came from.

    ``padding_idx`` (as in ``torch.nn.functional.embedding``): that row gets no gradient, so padding
    tokens never move it. ``scale_grad_by_freq``: each position's gradient is divided by how often
    its id occurs in ``ids`` (so a frequent token does not dominate the update)."""

    @staticmethod
    def forward(ctx, ids, weight, padding_idx=None, scale_grad_by_freq=False):
        if ids.dtype not in (np.int64, np.int32):  # (torch's RuntimeError, for bytes and bools too)
            kind = f"CPU{torch_name(ids.dtype)}Type" if ids.dtype.kind in "cbV" else _legacy_type(ids)  # (no class)
            raise RuntimeError(f"Expected tensor for argument #1 'indices' to have one of the following scalar "
                               f"types: Long, Int; but got {kind} instead (while checking arguments for embedding)")
        if ids.size and (ids.min() < 0 or ids.max() >= weight.shape[0]):
            raise _ids_out_of_range(ids, weight.shape[0])
        ctx.ids, ctx.weight_shape, ctx.padding_idx = ids, weight.shape, padding_idx
        ctx.scale_grad_by_freq = scale_grad_by_freq
        return weight[ids]

    @staticmethod
    def backward(ctx, g):
        # torch's CPU kernel (embedding_dense_backward_cpu): for each position in order, grad[id].add_(g[i],
        # alpha=scale), in the gradient's own dtype: a 16-bit row is rounded after every addition (summed in float32
        # and rounded once, a frequent bfloat16 token's row was off in 2 of 3 elements), and under
        # scale_grad_by_freq the scale 1/count is add's alpha, fused into its multiply-add (dividing first, then
        # adding, was off in 2 of 3 too)
        xp = xp_of(g)
        ids = ctx.ids.reshape(-1)
        g2 = upcast(g.reshape(ids.size, ctx.weight_shape[1]))  # (not -1: embedding_dim may be 0)
        grad = xp.zeros(ctx.weight_shape, dtype=g2.dtype)
        scales = None
        if ctx.scale_grad_by_freq:  # counted over every position, padding included (torch's)
            counts = xp.bincount(ids, minlength=ctx.weight_shape[0])
            scales = (1.0 / counts[ids]).astype(g2.dtype)  # (torch: a double, add's alpha in the math dtype)
        if ctx.padding_idx is not None:  # padding positions contribute nothing
            keep = ids != ctx.padding_idx
            ids, g2 = ids[keep], g2[keep]
            scales = None if scales is None else scales[keep]
        if xp is not np:
            xp.add.at(grad, ids, g2 if scales is None else g2 * scales[:, None])
            return None, grad.astype(g.dtype, copy=False)
        if len(ids):
            _add_rows_in_order(grad, ids, g2, scales, g.dtype)
        return None, grad.astype(g.dtype, copy=False)


def _add_rows_in_order(grad, ids, rows, scales=None, dtype=None):
    """``np.add.at(grad, ids, rows)``: each id's rows added one after another in their order, as torch's
    embedding backward adds them (a pairwise sum, NumPy's reduceat, rounds otherwise: 2 elements of 3
    of a repeated token's gradient). add.at goes row by row; here every id's first rows are added in one
    vectorised step, then every id's second rows, ...: as many steps as the most frequent id has rows.
    ``scales``: each row's factor, add's alpha; ``dtype``: a 16-bit gradient's, to which every step rounds."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    run_starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
    run_lengths = np.diff(np.append(run_starts, len(ids)))
    occurrence = np.arange(len(ids)) - np.repeat(run_starts, run_lengths)  # 0 for an id's first row, ...
    by_occurrence = order[np.argsort(occurrence, kind="stable")]
    bounds = np.concatenate(([0], np.cumsum(np.bincount(occurrence))))
    sixteen_bit = dtype is not None and np.dtype(dtype).itemsize == 2
    if sixteen_bit and scales is not None:  # (add's alpha in the 16-bit kernel is a 16-bit number)
        scales = scales.astype(dtype).astype(grad.dtype)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        step = by_occurrence[start:stop]  # (distinct ids: no two of these rows meet)
        if sixteen_bit:
            grad[ids[step]] = _add_rows16(grad[ids[step]], rows[step], None if scales is None else scales[step], dtype)
        elif scales is None:
            grad[ids[step]] += rows[step]
        else:  # add's fused multiply-add: acc + alpha * row rounded once
            alpha = np.ascontiguousarray(np.broadcast_to(scales[step, None], (len(step), rows.shape[1])))
            grad[ids[step]] = fastmath.multiply_add(rows[step], alpha, grad[ids[step]])


def _add_rows16(acc, rows, alpha, dtype):
    """``acc.add_(rows, alpha=alpha)`` of 16-bit rows (float32 arrays holding 16-bit values, each row's alpha a 16-bit
    number or None), as ATen's 16-bit add kernel: vectors of ``2 * FLOAT_LANES`` elements in float32, rounded once
    (the product of two 16-bit numbers is exact in float32), the rest of a row element by element in 16-bit
    arithmetic: the product rounded, then the sum."""
    if alpha is None:
        return (acc + rows).astype(dtype).astype(acc.dtype)
    products = rows * alpha[:, None]
    whole = rows.shape[1] - rows.shape[1] % (2 * float32_math.FLOAT_LANES)
    products[:, whole:] = products[:, whole:].astype(dtype).astype(acc.dtype)
    return (acc + products).astype(dtype).astype(acc.dtype)


def _counted_targets(xp, targets, n_classes, ignore_index, name):
    """``(valid, safe)``: which targets count, and the targets with ignored ones replaced by class 0
    (a safe index), after checking that every counted target is a class in ``[0, n_classes)``."""
    valid = targets != ignore_index
    safe = xp.where(valid, targets, 0)
    if safe.size and (safe.min() < 0 or safe.max() >= n_classes) and (n_classes or valid.any()):
        # (no classes and every target ignored: the safe class 0 is never read)
        first = safe.reshape(-1)[xp.argmax(((safe < 0) | (safe >= n_classes)).reshape(-1))]  # (torch's loop's first)
        raise with_note(IndexError(f"Target {int(first)} is out of bounds."),
                        f"{name}: targets must lie in [0, {n_classes}) or equal ignore_index={ignore_index}")
    return valid, safe


def _weight_of(weight, safe_targets):
    """Each row's class weight; with no classes every target was ignored (and there is no class 0)."""
    return weight[safe_targets] if len(weight) else 0


class CrossEntropy(Function):
    """``-log softmax(logits)[target]`` of each row of logits [N, C], reduced as PyTorch does.

    ``ctx.valid`` holds each row's weight: 1 (or the target class's ``weight``), 0 for targets equal
    to ``ignore_index``. Fused: forward keeps only the softmax probabilities; backward is
    ``(p - onehot) * valid / divisor`` with divisor the sum of the weights for 'mean'.

    Saved-tensor hooks see no pack here: torch's log_softmax + nll_loss pack 4 (log_softmax's result
    twice, the target, total_weight), minilora's probabilities and targets are arrays of its own, kept
    on the node (``save_on_cpu`` does not move them; pinned in tests/test_views_r8.py).
    """

    @staticmethod
    def forward(ctx, logits, targets, weight=None, ignore_index=-100, reduction="mean"):
        xp = xp_of(logits)
        valid, safe_targets = _counted_targets(xp, targets, logits.shape[1], ignore_index, "cross_entropy")
        ctx.counted = valid  # (which rows count at all: see backward)
        if weight is not None:  # each row counts with its class's weight (0 when ignored)
            valid = xp.where(valid, _weight_of(weight, safe_targets), 0).astype(logits.dtype, copy=False)
        # (C order, as torch's log_softmax result, whatever the logits' layout: empty_like lays an expanded one's
        # out column-major, and the gradient with it)
        probs, losses = xp.empty(logits.shape, logits.dtype), xp.empty(logits.shape[0], logits.dtype)
        if logits.size:
            parallel.rows(_cross_entropy_rows, logits, safe_targets, valid, probs, losses)
            losses[~ctx.counted] = 0  # an ignored row's loss is torch's 0, not its class 0's loss times 0 (a -inf
            # logit there, masked logits at a padded position, made inf * 0 = nan in a 'none' loss)
        else:  # no rows, or no classes (then every target was ignored: checked above): no losses
            losses[:] = 0
        ctx.probs, ctx.targets, ctx.valid, ctx.reduction = probs, safe_targets, valid, reduction
        if reduction == "none":
            return losses
        # PyTorch's 'mean' divides by the number of non-ignored targets, or with a weight by the
        # sum of their weights (0/0 = nan when all are ignored).
        ctx.divisor = _total_weight(valid, ctx.counted) if reduction == "mean" else 1
        with np.errstate(invalid="ignore"):  # every target ignored: 0/0 = nan, silently, as torch
            return _loss_total(losses, ctx.counted) / logits.dtype.type(ctx.divisor)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        # one incoming gradient per row: g itself for 'none', the scalar's value repeated otherwise
        g_rows = g if ctx.reduction == "none" else xp.broadcast_to(g, ctx.valid.shape)
        divisor = ctx.divisor if ctx.reduction == "mean" else 1
        if divisor == 0:
            return _gradient_over_no_weight(xp, ctx.probs.shape, ctx.counted, ctx.probs.dtype), None
        if ctx.probs.size == 0:  # (no classes: every target was ignored, the gradient is empty)
            return xp.zeros_like(ctx.probs), None
        grad = xp.empty_like(ctx.probs)
        parallel.rows(lambda *blocks: _cross_entropy_backward_rows(*blocks, divisor=divisor),
                      ctx.probs, ctx.targets, ctx.valid, g_rows, grad)
        return grad, None


_NLL_CASCADED = (np.float32, np.float64)  # (16-bit losses: _nll_reduced_in_16_bits)


def _loss_total(losses, counted):
    """The sum of the rows' losses as torch's nll_loss adds them: for float32 and float64, its cascade of
    partial sums over the counted rows (``_cascade_sum``), else NumPy's."""
    if losses.dtype not in _NLL_CASCADED or xp_of(losses) is not np:
        return losses.sum()
    rows = np.flatnonzero(counted)
    return losses.dtype.type(_cascade_sum(losses[rows], rows, len(losses)))


def _total_weight(row_weights, counted):
    """The sum of the counted rows' weights, 'mean''s divisor, as torch's nll_loss adds it: for float32 and
    float64, its cascade of partial sums in that dtype (``_cascade_sum``; numpy's pairwise sum is another
    number in 1 batch of 3, and every gradient is divided by it)."""
    xp = xp_of(row_weights)
    if row_weights.dtype not in _NLL_CASCADED or xp is not np:
        return row_weights.sum().item()
    rows = xp.flatnonzero(counted)
    return float(_cascade_sum(row_weights[rows], rows, len(row_weights)))


def _gradient_over_no_weight(xp, shape, counted, dtype, columns=None):
    """The gradient of a 'mean' whose divisor is 0, as torch's: zeros where no row counted (a
    batch whose targets are all ignored: the loss is nan, yet the step must leave the weights alone),
    nan in the counted rows whose class weights summed to 0 (their g / 0). ``columns``: only each
    counted row's target entry (nll_loss), else the whole row (cross_entropy)."""
    grad = xp.zeros(shape, dtype=dtype)
    rows = xp.flatnonzero(counted)
    if columns is None:
        grad[rows] = np.nan
    else:
        grad[rows, columns[rows]] = np.nan
    return grad


def _cross_entropy_backward_rows(probs, targets, valid, g, grad, divisor):
    """The logits' gradient for a block of rows: ``(probs - onehot(targets)) * g * valid / divisor``,
    rounded as torch's log_softmax + nll_loss backward rounds it (there ``probs`` is ``exp(log_softmax)``).

    ``valid`` is each row's weight (0 for an ignored target), ``g`` the incoming gradient of each
    row's loss, ``divisor`` what 'mean' divided by (1 otherwise). The Llama's loss runs it (``F.cross_entropy``
    on [N, C] logits); with ``label_smoothing`` or [N, C, d1, ...] logits torch composes the loss from
    ``log_softmax`` and ``nll_loss``, and so does minilora (exercise 1.7's backward runs there)."""
    # EXERCISE 2.5: fill grad: 0 for ignored targets (valid = 0), each row times g * valid / divisor
    # BEGIN SOLUTION
    share = ((g / divisor) * valid).astype(grad.dtype, copy=False)
    xp_of(grad).multiply(probs, share[:, None], out=grad)  # p * share, and at the target p * share - share:
    rows = xp_of(grad).arange(len(grad))
    grad[rows, targets] = _multiply_add(probs[rows, targets], share, -share)  # (rounded once, as torch's)
    grad[valid == 0] = 0  # (a row that counts for nothing is +0, as torch's; g * 0 could be -0)
    # END SOLUTION


def _multiply_add(a, b, c):
    """``a * b + c`` rounded once, as torch's log_softmax backward's fused multiply-add computes it (two roundings
    can differ in the last bit; ``fastmath.multiply_add`` follows torch's build: fused where it fuses)."""
    return fastmath.multiply_add(a, b, c)


class Dropout(Function):
    """Zero each element with probability ``p``, scale the rest by ``1/(1-p)`` (inverted dropout)."""

    @staticmethod
    def forward(ctx, a, p, generator, channels=False):
        xp = xp_of(a)
        keep = dropout_noise(a, p, generator, channels)
        ctx.mask = xp.asarray(keep) * dropout_scale(p, a.dtype)
        if a.flags.c_contiguous:
            return a * ctx.mask
        return in_iterator_layout(a * ctx.mask, [a, ctx.mask])  # (torch's input * noise: the input's order)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.mask


class SwiGLU(Function):
    """``silu(gate) * up``, Llama's gated MLP activation, as one node (Silu then Mul would be two,
    and would keep one more [rows, intermediate] array alive until backward).

    With ``s = sigmoid(gate)``: ``d up = g * gate * s`` and ``d gate = g * up * s * (1 + gate * (1 - s))``.
    float32 NumPy arrays get torch's bits (``float32_math.swiglu``: silu's kernel, rounded, times up; the
    backward as torch's autograd rounds mul's and silu's), from ``d = 1 + exp(-gate)`` kept by the forward.

    Saved-tensor hooks see 2 packs (gate, up) where torch's ``F.silu(gate) * up`` packs 3 (gate, up and
    silu's output): this node keeps ``d`` (float32) or ``sigmoid(gate)`` instead, an array of its own, not
    packed (pinned in tests/test_views_r8.py).
    """

    @staticmethod
    def forward(ctx, gate, up):
        if gate.shape != up.shape:
            raise ValueError(f"swiglu: gate {gate.shape} and up {up.shape} must have the same shape")
        ctx.gate, ctx.up, ctx.d, ctx.s = gate, up, None, None
        if all(type(a) is np.ndarray and a.dtype == float32 for a in (gate, up)):  # torch's bits
            out, ctx.d = _swiglu_float32(gate, up)
            return out
        xp = xp_of(gate)
        # C order (not empty_like's: a transposed gate's layout), so reshape(-1) below is a view
        ctx.s, out = xp.empty(gate.shape, gate.dtype), xp.empty(gate.shape, gate.dtype)
        # s = sigmoid(gate), out = gate * s * up
        parallel.rows(fastmath.swiglu, gate.reshape(-1), up.reshape(-1), ctx.s.reshape(-1),
                      out.reshape(-1), work_per_row=1)
        return out

    @staticmethod
    def backward(ctx, g):
        if ctx.d is not None:
            return float32_math.swiglu_backward(g, ctx.gate, ctx.up, ctx.d, ctx.needs_input_grad[1])
        xp = xp_of(g)
        dgate, dup = xp.empty(g.shape, g.dtype), xp.empty(g.shape, g.dtype) if ctx.needs_input_grad[1] else None
        # dup = g * gate * s, dgate = g * up * s * (1 + gate * (1 - s))
        parallel.rows(fastmath.swiglu_backward, g.reshape(-1), ctx.gate.reshape(-1),
                      ctx.up.reshape(-1), ctx.s.reshape(-1), dgate.reshape(-1),
                      None if dup is None else dup.reshape(-1), work_per_row=1)
        return dgate, dup


class Glu(Function):
    """``a * sigmoid(b)`` for the halves ``a``, ``b`` of ``dim``, one node as torch's (GluBackward0); its backward
    ATen's ``glu_backward``: ``s = sigmoid(b)``, the second half's gradient ``(1 - s) s a g`` (each product rounded,
    left to right), the first's ``s g``, both written into one gradient (no -0 + 0 of two halves' sum). Its result
    is laid out as the halves (torch's TensorIterator over them: a channels_last or transposed input's order)."""
    torch_layout = "own"

    @staticmethod
    def forward(ctx, x, *, dim):
        xp = xp_of(x)
        half = x.shape[dim] // 2
        a, b = xp.split(x, 2, axis=dim) if x.shape[dim] else (x, x)
        if type(b) is np.ndarray and b.dtype == np.float32:  # (torch's loop runs over (a, b), not b alone)
            s = float32_math.relooped(float32_math.sigmoid(b), b, (b,), (a, b), float32_math.SIGMOID)
        else:
            s = 1 / (1 + xp.exp(-b))
        ctx.a, ctx.b, ctx.s, ctx.dim, ctx.half = a, b, s, dim, half
        return in_layout_of(a * s, a)

    @staticmethod
    def backward(ctx, g):
        xp, a, s = xp_of(g), ctx.a, ctx.s
        if type(g) is np.ndarray and s.dtype == np.float32:  # (torch's sigmoid_out into the gradient's first half)
            dim = ctx.dim % g.ndim
            into = np.empty(g.shape[:dim] + (2 * ctx.half,) + g.shape[dim + 1:], np.float32)
            into = np.split(into, 2, axis=dim)[0]  # (a view of a new contiguous gradient: its strides)
            s = float32_math.relooped(s, ctx.b, (a, ctx.b), (into, ctx.b), float32_math.SIGMOID)
        return xp.concatenate([s * g, (1 - s) * s * a * g], axis=ctx.dim)


class PRelu(Function):
    """``x`` where positive, ``w x`` elsewhere (``w`` broadcast to ``x``), one node as torch's ``_prelu_kernel``;
    its backward ATen's ``_prelu_kernel_backward``: the input's gradient ``g`` or ``w g`` chosen per element (never
    a sum of two masked parts, so ``w g = -0`` stays -0), the weight's ``x g`` where ``x <= 0`` (+0 elsewhere)
    summed to the weight's shape in torch's order (``float32_sums.cascade_sum``)."""
    torch_layout = "elementwise"  # (a TensorIterator kernel over x and the broadcast w: Function.torch_layout)

    @staticmethod
    def forward(ctx, x, w):
        ctx.x, ctx.w = x, w
        return xp_of(x).where(x > 0, x, w * x)

    @staticmethod
    def backward(ctx, g):
        xp, x, w = xp_of(g), ctx.x, ctx.w
        positive = x > 0
        gx = xp.where(positive, g, w * g) if ctx.needs_input_grad[0] else None
        gw = None
        if ctx.needs_input_grad[1]:
            full = xp.where(positive, g.dtype.type(0), x * g)
            lead = x.ndim - w.ndim  # (the dimensions w was broadcast along)
            axes = tuple(range(lead)) + tuple(lead + j for j in range(w.ndim) if w.shape[j] == 1 != x.shape[lead + j])
            summed = float32_sums.cascade_sum(full, axes) if axes else full
            gw = (full.sum(axis=axes) if summed is None else summed).reshape(w.shape)
        return gx, gw


def _swiglu_float32(gate, up):
    """float32 ``silu(gate) * up`` with torch's bits (``float32_math.swiglu``) as C-contiguous ``(out, d)``:
    silu's loop runs over gate in its memory order (where its scalar tail lies), so a transposed gate
    goes in transposed back to that order."""
    order = layout_order(gate)
    if order == tuple(range(gate.ndim)):
        return float32_math.swiglu(gate, up)
    back = tuple(np.argsort(order))
    out, d = float32_math.swiglu(gate.transpose(order), up.transpose(order))
    return np.ascontiguousarray(out.transpose(back)), d.transpose(back)


def _cross_entropy_rows(logits, targets, valid, probs, losses):
    """Softmax probabilities and losses of a block of rows (a numerically stable log-softmax)."""
    xp = xp_of(logits)
    shifted = probs  # computed in place: shifted logits -> exp -> probabilities
    xp.subtract(logits, float32_math.row_max(logits), out=shifted)
    target_logit = shifted[xp.arange(len(shifted)), targets]
    if logits.dtype in (float32, np.float64) and xp is np:  # as torch's log_softmax: SLEEF's exp, lane sums,
        # log; and the probabilities as its backward gets them, exp(log_softmax)
        vector = float32_math.vectorized if logits.dtype == float32 else float32_math.vectorized64
        lanes = float32_math.FLOAT_LANES // (logits.dtype.itemsize // 4)  # (8 doubles a vector where 16 floats)
        log_sum = vector("log", fastmath.lane_sum(vector("exp", shifted), lanes=lanes))
        shifted -= log_sum[:, None]
        probs[...] = vector("exp", shifted)
    else:
        xp.exp(shifted, out=probs)
        sum_exp = probs.sum(axis=1, keepdims=True)
        probs /= sum_exp
        log_sum = xp.log(sum_exp[:, 0])
    losses[:] = (log_sum - target_logit) * valid


class RMSNorm(Function):
    """``y = w * x / rms(x)`` with ``rms(x) = sqrt(mean(x^2) + eps)`` over the trailing ``width``
    elements of each row (``normalized_shape`` flattened; ``weight`` too).
    From a channels_last input torch's result is channels_last, from any other layout contiguous (its
    input's suggested memory format: Function.torch_layout; ``x.permute(0, 2, 1, 3)``'s is contiguous).

    With ``r = 1/rms``: ``dx = r * (gw - x * r^2 * mean(gw * x))`` where ``gw = g * w``;
    ``dw = sum over rows of g * x * r``. Rows are independent: blocks of them run in parallel.
    float32 and float64 values on the CPU are torch's bits (the squares added in torch's order, a view's in the
    view's layout: Exercise 2.1's region gets its rows as a strided view, ``_rms_norm_rows_of_view``), and so are
    their gradients: Exercise 2.2's solution computes the
    input's gradient as torch's composite's autograd does, op by op, from the input ``x``. Every dtype and device
    runs that one region, so a learner's backward is what the model trains with.

    torch's composite uses the input twice (``pow(x, 2)`` and ``x * rsqrt(...)``), so its autograd adds x's gradient
    in parts: whatever a later node gave x first (a Llama's residual add), then the product's part, then the part
    through the mean. A float32/float64 CPU input comes a second time (``x_again``, as ``ops/lora.py``'s LoraLinear):
    its first slot takes the product's part, the second the mean's, and the engine adds them in that order (one
    sum, ``prev + (product + mean)``, put a float32 Llama's embedding gradient off torch's in ~5% of its elements).

    Saved-tensor hooks (``saved_tensors_hooks``, ``save_on_cpu``) see 2 packs, the weight and the
    input, where torch 2.13's composite rms_norm packs 6 (input, rsqrt [..., 1] twice, normalised input,
    weight, ...): this one node keeps its normalised input and ``r`` as arrays of its own, not packed
    (pinned in tests/test_views_r8.py).
    """
    torch_layout = "suggested"

    @staticmethod
    def forward(ctx, x, weight, x_again=None, *, eps, width):
        xp = xp_of(x)
        ctx.weight_shape = None if weight is None else weight.shape  # normalized_shape
        x2, weight = _rows(x, width), _flat(weight)
        normed, r, out = xp.empty_like(x2), xp.empty((len(x2), 1), x.dtype), xp.empty_like(x2)
        eps_x = x.dtype.type(eps)
        if not _torch_bits_array(x) or x.flags.c_contiguous or not width:
            # The solution's operations compiled, one pass a row, in gemm_pool's C threads: [1024, 256] float32
            # 300 us -> ~40 us (Intel Xeon); else (a learner's region, no compiler, float16) the region itself:
            # a compiled row sum and two multiplies: each element costs a quarter of MIN_ITEMS' pass, so the rows
            # are split from 512K elements (2 vCPUs of an AMD EPYC, medians: [1024, 256] 278 us split, 186
            # whole; [2048, 256] 299 / 308; [1024, 1024] 430 / 498)
            if not (_rms_norm_is_the_solution() and float32_sums.rms_norm_rows(x2, weight, eps_x, normed, r, out)):
                parallel.rows(lambda *blocks: _rms_norm_rows(*blocks, weight, eps_x), x2, normed, r, out,
                              work_per_row=max(1, x2.shape[1] // 4))
        else:  # a view: torch adds its squares in the view's own layout, so the region gets its rows as views
            _rms_norm_rows_of_view(x, width, normed, r, out, weight, eps_x)
        ctx.normed, ctx.r, ctx.weight = normed, r, weight
        ctx.x = x  # (torch's composite differentiates from the input, which its node keeps too: no extra pack)
        ctx.eps = eps  # (create_graph=True recomputes r from the input: minilora/ops/higher_order.py)
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        normed, r, w = ctx.normed, ctx.r, ctx.weight
        g2, x_rows = _rows(g, normed.shape[1]), _rows(ctx.x, normed.shape[1])
        in_parts = len(ctx.inputs) > 2  # (x_again: the two parts, for the engine to add; class docstring)
        gx, gx_mean = xp_of(g).empty_like(g2), xp_of(g).empty_like(g2) if in_parts else None
        if not (_rms_norm_backward_is_the_solution()
                and float32_sums.rms_norm_backward_rows(g2, x_rows, r, w, gx, gx_mean)):  # (compiled: forward's)
            gx_mean = xp_of(g).empty_like(g2) if gx_mean is None else gx_mean
            parallel.rows(lambda *blocks: _rms_norm_backward_rows(*blocks, w), g2, x_rows, normed, r, gx, gx_mean)
            if not in_parts:
                gx += gx_mean
        gweight = None
        if w is not None and ctx.needs_input_grad[1]:
            gweight = _column_sum_as_torch(g2, normed).reshape(ctx.weight_shape)
        if in_parts:
            return gx.reshape(g.shape), gweight, gx_mean.reshape(g.shape)
        return gx.reshape(g.shape), gweight


def _rms_norm_rows(x, normed, r, out, weight, eps):
    """RMSNorm of a block of rows ``x`` [rows, d]: fills ``r`` (1/rms, [rows, 1]), ``normed``, ``out``."""
    xp = xp_of(x)
    # EXERCISE 2.1: fill r = 1/sqrt(mean(x^2) + eps) per row, normed = x * r and out = normed * weight (or normed)
    # BEGIN SOLUTION
    r[:, 0] = 1 / xp.sqrt(_mean_of_squares(x) + eps)
    xp.multiply(x, r, out=normed)
    if weight is None:
        out[...] = normed
    else:
        xp.multiply(normed, weight, out=out)
    # END SOLUTION


_rms_norm_is_the_solution = solutions.solution_check(_rms_norm_rows)  # (else the learner's code runs)


def _rms_norm_rows_of_view(x, width, normed, r, out, weight, eps):
    """Exercise 2.1's region on a float32/float64 view that is no C-contiguous array (``x.T``, ``x[:, ::2]``,
    ``x[..., 1:]``): called once on its [rows, width] view of ``x``'s own memory, so ``_mean_of_squares`` adds each
    row's squares in the view's layout as torch's ``pow(x, 2).mean(-1)`` does. A view whose rows no 2-D view holds
    (a permuted batch, ``x.permute(1, 0, 2)``: torch's iterator orders the sums by all its dimensions) is the one
    case whose squares are added outside the region (``_strided_mean_of_squares``), and the values follow."""
    try:
        rows = x.reshape((-1, width), copy=False)
    except ValueError:  # (no view of the rows: NumPy would copy)
        r[:, 0] = 1 / np.sqrt(_strided_mean_of_squares(x, width) + eps)
        np.multiply(_rows(x, width), r, out=normed)
        np.multiply(normed, 1 if weight is None else weight, out=out)
        return
    _rms_norm_rows(rows, normed, r, out, weight, eps)


def _mean_of_squares(x):
    """The mean of each row's squares, ``(x * x).mean(axis=1)``; float32 and float64 in the order torch adds it
    (its CPU rms_norm is composite, ``pow(x, 2).mean(-1)``: ATen's cascade sum, ``float32_sums.row_sums``; a view's
    rows in the view's own layout, ``float32_sums.cascade_sum``), so F.rms_norm, nn.RMSNorm and the Llama's norms
    are torch's to the last bit; else ``_row_mean``."""
    if _torch_bits_array(x) and x.shape[1]:
        sums = None if x.flags.c_contiguous else float32_sums.cascade_sum(np.square(x), (1,))
        if sums is None:
            sums = float32_sums.row_sums(np.ascontiguousarray(x), squares=True)
        return sums / x.dtype.type(x.shape[1])
    return _row_mean(x, x)


def _strided_mean_of_squares(x, width):
    """``_mean_of_squares`` of a float32/float64 view whose rows no 2-D view holds, as torch's
    ``pow(x, 2).mean(-1)`` adds it, in the view's layout (``float32_sums.cascade_sum``), one per row."""
    dims = next(k for k in range(1, x.ndim + 1) if math.prod(x.shape[x.ndim - k:]) == width)
    sums = float32_sums.cascade_sum(np.square(x), tuple(range(x.ndim - dims, x.ndim)))
    if sums is None:  # (a layout float32_sums does not model: the rows' own order)
        sums = float32_sums.row_sums(_rows(x, width), squares=True)
    return sums.reshape(-1) / x.dtype.type(width)


def _rms_norm_backward_rows(g, x, normed, r, gx, gx_mean, weight):
    """The input's gradient for a block of rows, from the input ``x`` and the saved ``normed`` (= x r) and ``r``, in
    torch's two parts: ``gx`` along the product ``x * r`` (r held fixed), ``gx_mean`` through ``r`` (the mean of
    squares); their sum is the gradient, and the node hands them to the engine apart (``RMSNorm``'s docstring).

    The solution computes it as torch's autograd differentiates its composite rms_norm, ``(x * rsqrt(s)) * w`` with
    ``s = pow(x, 2).mean(-1) + eps``, op by op, rounding where torch rounds: ``gw = g * w``; the product's
    ``gw * r`` plus, through rsqrt (``-0.5 * grad * r^3``), the mean (``/ n``) and the square (``grad * 2x``),
    ``x * k`` with ``k = -(sum(gw * x) * r^3) / n`` (the factors 2 and -0.5 are exact), the row's sum in torch's
    order (``_row_sum``). So float32 and float64 gradients are torch's bits, and any right formula passes the
    exercise's tests (they check the math: ``r (gw - normed mean(gw normed))`` is the same gradient)."""
    # (the input's gradient in its two parts: gx along the product x * r, r held fixed; gx_mean through r)
    # EXERCISE 2.2: fill gx and gx_mean for these rows from g, the input x (or normed = x r), r and weight
    # BEGIN SOLUTION
    gw = g * weight if weight is not None else g
    r_cubed = r * r * r  # (pow(r, 3): ATen's base * base * base)
    k = -(_row_sum(gw * x)[:, None] * r_cubed) / x.dtype.type(x.shape[1])
    xp_of(g).multiply(gw, r, out=gx)
    xp_of(g).multiply(x, k, out=gx_mean)
    # END SOLUTION


_rms_norm_backward_is_the_solution = solutions.solution_check(_rms_norm_backward_rows)
_SUMMED = (np.dtype(np.float32), np.dtype(np.float64))


def _torch_bits_array(a):
    """Whether ``a`` is a non-empty float32 or float64 NumPy array, whose norm gradients follow torch's bits here."""
    return type(a) is np.ndarray and a.dtype in _SUMMED and a.size > 0


def _row_sum(a):
    """The sum of each row of a 2-D array, in torch's order for float32 and float64 (its cascade sum along the
    last dim, ``float32_sums.row_sums``), else the array library's own."""
    if _torch_bits_array(a):
        return float32_sums.row_sums(np.ascontiguousarray(a))
    return a.sum(axis=1)


def _column_sum_as_torch(g, b):
    """``(g * b).sum(0)``: a weight's gradient summed over the rows, in torch's order for float32 and float64
    (``sum_to_size``'s cascade sum), else ``_column_sum``."""
    if _torch_bits_array(g) and g.dtype == b.dtype:
        fused = float32_sums.column_sums_of_products(g, b)  # (the same sums, no product array, ranges side by side)
        return fused if fused is not None else float32_sums.cascade_sum(np.ascontiguousarray(g * b), (0,))
    return _column_sum(g, b)


class LayerNorm(Function):
    """``y = w * (x - mean) / sqrt(var + eps) + b`` over the trailing ``width`` elements of each row
    (``normalized_shape`` flattened; ``weight`` and ``bias`` too), with the biased variance.

    With ``n`` the normalised input, ``r = 1/sqrt(var + eps)`` and ``gw = g * w``:
    ``dx = r * (gw - mean(gw) - n * mean(gw * n))``, ``dw = sum over rows of g * n``, ``db = sum of g``.
    Work is on [rows, width] views, blocks of rows in parallel; the means over a row are
    ``fastmath.row_mean`` (no temporary ``a * b``). float32 and float64 on the CPU run torch's kernel instead,
    forward and backward (``_layer_norm_rows_as_torch``, ``_layer_norm_backward_as_torch``).

    Saved-tensor hooks see 3 packs (input, weight, bias) where torch's NativeLayerNorm packs 5
    (weight, input, bias, mean and rstd [..., 1]): the normalised input and ``r`` this node keeps are
    its own arrays, not packed (pinned in tests/test_views_r8.py and tests/test_autograd_r7.py).
    """
    torch_layout = "contiguous"  # (from a channels_last input too: Function.torch_layout)

    @staticmethod
    def forward(ctx, x, weight, bias, *, eps, width):
        xp = xp_of(x)
        ctx.weight_shape = (weight if weight is not None else bias if bias is not None else x).shape
        x2, weight, bias = _rows(x, width), _flat(weight), _flat(bias)
        normed, r, out = xp.empty_like(x2), xp.empty(len(x2), x.dtype), xp.empty_like(x2)
        mean = xp.empty(len(x2), x.dtype)
        parallel.rows(lambda *blocks: _layer_norm_rows(*blocks, weight, bias, eps), x2, normed, r, out, mean)
        ctx.normed, ctx.r, ctx.weight = normed, r, weight
        # torch's kernel differentiates from the input, its mean and rstd (float32 and float64: its bits)
        ctx.x, ctx.mean = (x, mean) if type(x2) is np.ndarray and x2.dtype in _SUMMED and x2.size else (None, None)
        ctx.eps = eps  # (create_graph=True recomputes r from the input: minilora/ops/higher_order.py)
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        normed, r, w = ctx.normed, ctx.r, ctx.weight
        nx, nw, nb = ctx.needs_input_grad
        g2 = _rows(g, normed.shape[1])
        if ctx.x is not None and g2.dtype == normed.dtype:
            return _layer_norm_backward_as_torch(g2, _rows(ctx.x, g2.shape[1]), ctx.mean, r, w, ctx.needs_input_grad,
                                                 g.shape, ctx.weight_shape)
        gx = None
        if nx:
            gx = xp_of(g).empty_like(g2)
            parallel.rows(lambda *blocks: _layer_norm_backward_rows(*blocks, w), g2, normed, r, gx)
            gx = gx.reshape(g.shape)
        gweight = _column_sum(g2, normed).reshape(ctx.weight_shape) if nw else None
        gbias = _column_sum(g2).reshape(ctx.weight_shape) if nb else None
        return gx, gweight, gbias


def _layer_norm_rows(x, normed, r, out, mean, weight, bias, eps):
    if type(x) is np.ndarray and x.dtype in _SUMMED and x.shape[1]:
        _layer_norm_rows_as_torch(x, normed, r, out, mean, weight, bias, eps)
        return
    xp = xp_of(x)
    mean[:] = _row_mean(x)
    xp.subtract(x, mean[:, None], out=normed)
    r[:] = 1 / xp.sqrt(_row_mean(normed, normed) + eps)  # Python eps: stays float32 (NEP 50)
    normed *= r[:, None]
    if weight is not None:
        xp.multiply(normed, weight, out=out)
    else:
        out[...] = normed
    if bias is not None:
        out += bias


def _layer_norm_rows_as_torch(x, normed, r, out, mean_out, weight, bias, eps):
    """float32 (and float64) layer_norm as torch 2.13's CPU kernel, to the last bit: the mean and variance of
    ``RowwiseMoments`` (``float32_sums.row_moments``), ``r = 1 / sqrt(var + eps)``, then
    ``(x - mean) r w + b`` with its last multiply-add fused where torch's build fuses (the vector loop
    with both ``w`` and ``b``; its scalar loop for the others, where GCC folds ``w = 1``: ``(x - mean)
    r + b`` fused, and a zero ``b`` turns -0 into +0)."""
    mean, variance = float32_sums.row_moments(x)
    mean_out[:] = mean
    centered = x - mean[:, None]
    r[:] = 1 / np.sqrt(variance + x.dtype.type(eps))
    np.multiply(centered, r[:, None], out=normed)
    if weight is not None and bias is not None:
        out[...] = fastmath.multiply_add(normed, weight, bias)
    elif bias is not None:
        out[...] = fastmath.multiply_add(centered, r[:, None], bias)
    else:
        np.multiply(normed, 1 if weight is None else weight, out=out)
        out += x.dtype.type(0)


def _layer_norm_backward_as_torch(g, x, mean, rstd, weight, needs, shape, weight_shape):
    """float32/float64 layer_norm gradients as torch 2.13's CPU kernel computes them (``LayerNormBackwardKernel``:
    an AVX2 build on every capability, so 8 floats or 4 doubles a vector), from the input, its mean and rstd."""
    nx, nw, nb = needs
    gx = _layer_norm_input_grad_as_torch(g, x, mean, rstd, weight).reshape(shape) if nx else None
    gweight, gbias = _layer_norm_parameter_grads_as_torch(g, x, mean, rstd, nw and weight is not None, nb)
    return (gx, None if gweight is None else gweight.reshape(weight_shape),
            None if gbias is None else gbias.reshape(weight_shape))


def _layer_norm_16bit_kernel_runs(input, weight, bias):
    """A bfloat16/float16 NumPy input whose weight and bias are all of its dtype, or all float32 (torch's "mixed type"),
    or None: torch's 16-bit kernel, ``layer_norm_backward_frame`` in float32 on 16-bit buffers."""
    x = input._array
    params = [t for t in (weight, bias) if t is not None]
    if not (type(x) is np.ndarray and _is_16bit_float(input) and x.size > 0 and x.ndim >= 1) or input.is_meta:
        return False  # (meta: shapes only, the composed ops' meta rules give them)
    if not all(type(t._array) is np.ndarray for t in params):
        return False
    param_dtypes = {t.dtype for t in params}
    return param_dtypes <= {input.dtype} or param_dtypes == {np.dtype(np.float32)}


def _layer_norm_16bit_as_torch(x16, weight, bias, eps, width):
    """torch's 16-bit layer_norm (``layer_norm_kernel_mixed_type<T, T>`` and ``LayerNormBackwardKernelImplInternal<T,
    T>``): the values ``((x rstd + -rstd mean) w + b)`` in float32 (both multiply-adds fused), rounded to the dtype,
    and a function of (g, needs) for ``KernelGradients`` giving the gradients from the mean and rstd the forward saves
    in the dtype: ``dx`` as the float32 kernel's formula on them (``_layer_norm_16bit_input_grad``), ``dgamma`` and
    ``dbeta`` added row by row into 16-bit buffers, one a thread (``_layer_norm_16bit_parameter_grads``)."""
    dtype = x16.dtype
    w, b = (None if t is None else t._array.reshape(-1).astype(np.float32) for t in (weight, bias))
    x = x16.astype(np.float32).reshape(-1, width)
    mean, rstd = _layer_norm_16bit_statistics(x, eps, dtype)
    shifted = fastmath.multiply_add(x, rstd[:, None], (-rstd * mean)[:, None])
    values = fastmath.multiply_add(shifted, np.float32(1) if w is None else w, np.float32(0) if b is None else b)
    values = values.astype(dtype).reshape(x16.shape)
    mixed = any(t is not None and t.dtype == np.float32 for t in (weight, bias))  # (mean, rstd and the parameters'
    if not mixed:  # gradients kept in float32; else saved in the 16-bit dtype)
        mean, rstd = mean.astype(dtype).astype(np.float32), rstd.astype(dtype).astype(np.float32)

    @np.errstate(all="ignore")
    def gradients(g16, needs):
        g = np.ascontiguousarray(g16).astype(np.float32).reshape(-1, width)
        gx = _layer_norm_16bit_input_grad(g, x, mean, rstd, w, mixed).astype(dtype).reshape(x16.shape) \
            if needs[0] else None
        gw, gb = _layer_norm_16bit_parameter_grads(g, x, mean, rstd, dtype, needs[1] and w is not None,
                                                   needs[2] and b is not None, np.float32 if mixed else dtype)
        return (gx, None if gw is None else gw.reshape(weight.shape), None if gb is None else gb.reshape(bias.shape))
    return values, gradients


def _layer_norm_16bit_statistics(x, eps, dtype):
    """Each row's mean and rstd (float32) of a 16-bit input upcast to float32 ``x`` [rows, width], as torch's 16-bit
    kernel computes them (before it rounds them to the dtype, where its parameters are 16-bit too): RowwiseMoments'
    16-bit form (``float32_sums.sixteen_bit_row_moments``), rstd = 1 / sqrt(var + eps) in float32."""
    mean, variance = float32_sums.sixteen_bit_row_moments(x, dtype)
    return mean, np.float32(1) / np.sqrt(variance + np.float32(eps))


def _layer_norm_16bit_input_grad(g, x, mean, a, w, mixed=False):
    """The float32 ``dx`` of the 16-bit kernel: ``ds = sum(g x w)``, ``db = sum(g w)`` by ``vec::map*_reduce_all`` on
    16-bit data (``_half_vector_sums``; a float32 weight's kernel multiplies ``x (g w)``), then ``b``, ``c`` and
    ``a g w + b x + c`` as the float32 kernel's."""
    if w is None:
        ds, db = _half_vector_sums(g * x, (g, x)), _half_vector_sums(g)
    else:
        weights = np.broadcast_to(w, g.shape)
        gw = g * weights
        ds = _half_vector_sums(x * gw, (x, gw)) if mixed else _half_vector_sums(g * x * weights, (g * x, weights))
        db = _half_vector_sums(gw, (g, weights))
    scale = np.float32(1) / np.float32(x.shape[1])
    b = fastmath.multiply_add(db, mean, -ds) * a * a * a * scale
    c = fastmath.multiply_add(-b, mean, -(db * a * scale))
    ag = a[:, None] * g
    return fastmath.multiply_add(b[:, None], x, ag if w is None else ag * w) + c[:, None]


def _half_vector_sums(terms, factors=None, lanes=8):
    """Each row's sum of ``terms`` as ATen's reduced-float ``map_reduce_all`` adds them (AVX2: a 16-bit vector is two
    float vectors of ``lanes``): narrower than a 16-bit vector, the second half added into the first's lanes and the
    lanes in order; else two running float vectors, the partial last one into its own lanes, their sum's lanes folded
    in halves. ``factors`` (p, q) with ``terms = p q``: the additions after the first vector are fused, as GCC builds
    ``acc + p * q``."""
    def add(acc, part):
        return acc + terms[:, part] if factors is None else float32_math.fused_multiply_add(
            factors[0][:, part], factors[1][:, part], acc)
    width, both = terms.shape[1], 2 * lanes
    if width < both:
        first = terms[:, :lanes].copy()
        if width > lanes:
            first[:, :width - lanes] = add(first[:, :width - lanes], slice(lanes, width))
        return np.add.accumulate(first, axis=1)[:, -1]
    low, high = terms[:, :lanes].copy(), terms[:, lanes:both].copy()
    start, whole = both, width - width % both
    for start in range(both, whole, both):
        low, high = add(low, slice(start, start + lanes)), add(high, slice(start + lanes, start + both))
    start = whole if whole > both else both
    rest = width - start
    if rest > lanes:
        low = add(low, slice(start, start + lanes))
        high[:, :rest - lanes] = add(high[:, :rest - lanes], slice(start + lanes, width))
    elif rest > 0:
        low[:, :rest] = add(low[:, :rest], slice(start, width))
    total = low + high
    step = lanes // 2
    while step:  # (vec_reduce_all: lane i with lane i ^ step)
        total = total + total[:, np.arange(lanes) ^ step]
        step //= 2
    return total[:, 0]


def _layer_norm_16bit_parameter_grads(g, x, mean, a, dtype, need_weight, need_bias, result_dtype):
    """dgamma and dbeta as the 16-bit kernel adds them: each thread's rows (``at::parallel_for``, one even chunk a
    thread) into a 16-bit buffer of its own, each row's update rounded to the dtype (dgamma's ``buffer + g (a x + b)``
    with both multiply-adds fused, ``b = -a mean``), then the buffers added in float32 in thread order and rounded."""
    rows = len(x)
    threads = parallel.num_threads()
    chunk = -(-rows // min(threads, rows))
    buffers = []
    for start in range(0, rows, chunk):
        gamma_buffer = np.zeros(x.shape[1], np.float32)
        beta_buffer = np.zeros(x.shape[1], np.float32)
        for i in range(start, min(start + chunk, rows)):
            if need_weight:
                shifted = fastmath.multiply_add(np.float32(a[i]), x[i], np.float32(-a[i] * mean[i]))
                gamma_buffer = fastmath.multiply_add(g[i], shifted, gamma_buffer).astype(dtype).astype(np.float32)
            if need_bias:
                beta_buffer = (beta_buffer + g[i]).astype(dtype).astype(np.float32)
        buffers.append((gamma_buffer, beta_buffer))
    total = [np.zeros(x.shape[1], np.float32), np.zeros(x.shape[1], np.float32)]
    for gamma_buffer, beta_buffer in buffers:
        total[0], total[1] = total[0] + gamma_buffer, total[1] + beta_buffer
    return (total[0].astype(result_dtype) if need_weight else None), (total[1].astype(result_dtype) if need_bias else None)


def _layer_norm_input_grad_as_torch(g, x, mean, a, weight):
    """``dx = a g w + b x + c`` per row, with ``a = rstd``, ``ds = sum(g x w)``, ``db = sum(g w)`` (vector
    lanes folded in halves; the partial last vector's products fused into its lanes, as GCC builds it),
    ``b = (db mean - ds) a^3 / n`` and ``c = -b mean - db a / n``, each step rounded (or fused) as torch's."""
    lanes = 32 // x.itemsize
    dy_w = g if weight is None else g * weight
    if weight is None:
        ds, db = fastmath.lane_sum(g, x, fuse_tail=True, lanes=lanes), fastmath.lane_sum(g, lanes=lanes)
    else:
        weights = np.broadcast_to(weight, g.shape)
        ds = fastmath.lane_sum(g * x, weights, fuse_tail=True, lanes=lanes)
        db = fastmath.lane_sum(g, weights, fuse_tail=True, lanes=lanes)
    scale = x.dtype.type(1) / x.dtype.type(x.shape[1])
    b = fastmath.multiply_add(db, mean, -ds) * a * a * a * scale
    c = fastmath.multiply_add(-b, mean, -(db * a * scale))
    return fastmath.multiply_add(b[:, None], x, a[:, None] * dy_w if weight is None else a[:, None] * g * weight) \
        + c[:, None]


def _layer_norm_parameter_grads_as_torch(g, x, mean, a, need_weight, need_bias):
    """dgamma and dbeta as torch's kernel adds them: each thread of ``at::parallel_for`` over the rows (one even
    chunk a thread) adds its rows into a buffer of its own, one after another (dgamma by fused multiply-adds of
    ``g * (a x - a mean)``), then the buffers are added in thread order from 0."""
    rows = len(x)
    threads = min(parallel.num_threads(), rows)
    chunk = -(-rows // threads)
    gweight = np.zeros(x.shape[1], x.dtype) if need_weight else None
    gbias = np.zeros(x.shape[1], x.dtype) if need_bias else None
    for start in range(0, rows, chunk):
        part = slice(start, start + chunk)
        if need_weight:
            gweight += _fused_column_sum(g[part], fastmath.multiply_add(a[part, None], x[part],
                                                                        (-a[part] * mean[part])[:, None]))
        if need_bias:
            gbias += np.add.reduce(g[part], axis=0) + x.dtype.type(0)  # (row after row, from the buffer's 0)
    return gweight, gbias


def _fused_column_sum(g, t):
    """``sum over rows of g * t`` as a running fused multiply-add down each column, from 0, row after row."""
    total = np.zeros(g.shape[1], g.dtype)
    for row_g, row_t in zip(g, t):
        total = fastmath.multiply_add(row_g, row_t, total)
    return total


def _layer_norm_backward_rows(g, normed, r, gx, weight):
    gw = g * weight if weight is not None else g
    xp_of(g).subtract(gw, _row_mean(gw)[:, None], out=gx)
    gx -= normed * _row_mean(gw, normed)[:, None]
    gx *= r[:, None]


def _rows(a, width):
    """``a`` as a 2-D [rows, width] array (a view when ``a`` is contiguous, else a contiguous copy: the
    norms' results are contiguous, as torch's). A zero ``width`` (``normalized_shape`` with a 0) leaves
    nothing to normalise: no rows (NumPy cannot infer -1)."""
    a = xp_of(a).asarray(a, order="C")
    return a.reshape(-1, width) if width else a.reshape(0, 0)


def _flat(a):
    """A weight or bias of ``normalized_shape`` as one row of ``width`` numbers (or None)."""
    return None if a is None else a.reshape(-1)


def _row_mean(a, b=None):
    """The mean over each row of a 2-D array, ``(a * b).mean(axis=1)`` (``a.mean(axis=1)`` without
    ``b``); ``fastmath.row_mean`` computes it without the temporary ``a * b``."""
    return fastmath.row_mean(a, b)


def _column_sum(a, b=None):
    """The sum over the rows of a 2-D array, ``(a * b).sum(axis=0)`` (``a.sum(axis=0)`` without
    ``b``); ``fastmath.column_sum`` computes it without the temporary ``a * b``."""
    return fastmath.column_sum(a, b)


def rotate_half(x):
    """``[x1, x2] -> [-x2, x1]`` on the last axis (the Hugging Face Llama convention)."""
    half = x.shape[-1] // 2
    return xp_of(x).concatenate((-x[..., half:], x[..., :half]), axis=-1)


def _rotate_half_transposed(g):
    # EXERCISE 2.3: rotate_half is a linear map R; return R^T g (what backward needs to rotate gradients back)
    # BEGIN SOLUTION
    half = g.shape[-1] // 2
    return xp_of(g).concatenate((g[..., half:], -g[..., :half]), axis=-1)
    # END SOLUTION


class Rotary(Function):
    """RoPE: ``x * cos + rotate_half(x) * sin``; a rotation, so backward rotates back.
    Blocks of the batch run in parallel; a float32 forward is one compiled pass (``float32_math.rotary``, the
    same bits as ``_rotate_rows``' NumPy passes), and so is its backward (``float32_math.rotary_backward``,
    ``_rotate_back_rows``'). The node keeps ``cos`` and ``sin`` as given: saved-tensor
    hooks pack those two, as torch's two products (``x * cos``, ``rotate_half(x) * sin``) do."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.cos, ctx.sin = cos, sin
        return _rotated(float32_math.rotary, _rotate_rows, x, cos, sin)

    @staticmethod
    def backward(ctx, g):
        return _rotated(float32_math.rotary_backward, _rotate_back_rows, g, ctx.cos, ctx.sin), None, None


def _rotated(compiled, numpy_rows, x, cos, sin):
    """RoPE's forward or backward pass over ``x`` (or the gradient): ``compiled`` (float32_math's one pass) where it
    takes the arrays, else ``numpy_rows``' NumPy passes; blocks of the batch side by side where that pays."""
    out = xp_of(x).empty_like(x)  # in x's memory order (see Attention): no copy when it is transposed back
    cos, sin = _with_batch_axis(cos, x.shape), _with_batch_axis(sin, x.shape)
    # float32's one compiled pass is ~3x faster than the NumPy passes (2 vCPUs of an AMD EPYC, real-time priority,
    # [8, 4, 128, 64]: 87 us, the NumPy passes 255 us whole, 200 us split) and splits itself in gemm_pool's C
    # threads (a Python helper's hand-over cost more than it saved below ~1M elements: 150-165 us split)
    if float32_math.rotary_compiles(x, cos, sin, out):
        compiled(x, cos, sin, out)
    else:
        parallel.rows(numpy_rows, x, cos, sin, out)
    return out


def _with_batch_axis(a, shape):
    """``a`` (broadcastable to ``shape``) with ``shape``'s leading batch axis, so that
    ``parallel.rows`` splits it along with the batch; a view. Already there: ``a`` itself (cheap:
    decoding calls this for every token)."""
    if a.ndim == len(shape) and a.shape[0] == shape[0]:
        return a
    return xp_of(a).broadcast_to(a, shape)


def _rotate_rows(x, cos, sin, out):
    xp_of(x).multiply(x, cos, out=out)
    out += rotate_half(x) * sin


def _rotate_back_rows(g, cos, sin, gx):
    xp_of(g).multiply(g, cos, out=gx)
    gx += _rotate_half_transposed(g * sin)


class Attention(Function):
    """Scaled-dot-product attention with grouped-query heads.

    q: [B, Hq, Tq, D], k: [B, Hkv, Tk, D], v: [B, Hkv, Tk, Dv] with Hq a multiple of Hkv (GQA).
    ``bias`` (optional, an array) is added to the scores, broadcastable to [B, Hq, Tq, Tk]: the
    wrapper turns causal masks and boolean masks into it (-inf where a key takes no part). A query
    row whose every key is masked out gets zeros (as PyTorch), not 0/0 = NaN.

    Forward: S = q k^T * scale + bias, P = softmax(S), O = P v.
    Backward: dv = P^T dO, dP = dO v^T, dS = P * (dP - rowsum(dP * P)), dq = dS k * scale,
    dk = dS^T q * scale. Heads sharing one KV head add their dk, dv. And rowsum(dP * P) equals
    rowsum(dO * O) (FlashAttention's trick): a sum over D numbers per query instead of over Tk.

    Each batch element is independent, so both directions run on blocks of the batch in parallel
    (``minilora.parallel``), each block writing its slice of preallocated outputs.

    Saved-tensor hooks see 4 packs (q, k, v and the output) where torch's CPU flash attention packs 5
    (q, k, v, the logsumexp [B, H, Tq], the output): this node keeps the probabilities P instead of the
    logsumexp, an array of its own, not packed (pinned in tests/test_views_r8.py).
    """

    @staticmethod
    def forward(ctx, q, k, v, bias=None, scale=None):
        xp = xp_of(q)
        b, hq, tq, d = q.shape
        hkv, tk = k.shape[1], k.shape[2]
        if k.shape[:3] != v.shape[:3] or k.shape[0] != b or k.shape[3] != d or (hq % hkv if hkv else hq):
            raise RuntimeError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} are not "
                               "[B, Hq, Tq, D], [B, Hkv, Tk, D], [B, Hkv, Tk, Dv] with Hq a multiple of Hkv")
        scale = q.dtype.type(_default_scale(d) if scale is None else scale)
        ctx.q, ctx.k, ctx.v, ctx.scale = q, k, v, scale
        if 0 in (b, hq, tq, tk):  # nothing to attend to (or nobody asking): zeros, as torch
            ctx.probs = None
            return xp.zeros((b, hq, tq, v.shape[3]), q.dtype)
        if bias is not None:  # with the batch axis, so that it splits like q
            bias = _with_batch_axis(bias, (b, hq, tq, tk))
        out = _like(q, hq == hkv) if v.shape[3] == d else xp.empty((b, hq, tq, v.shape[3]), q.dtype)
        probs = xp.empty((b, hq, tq, tk), q.dtype)
        if not compiled_attention.forward(q, k, v, bias, out, probs, scale):  # (float32: the same steps in C)
            parallel.rows(lambda *blocks: _attention_forward(*blocks, scale=scale), q, k, v, bias,
                          out, probs, work_per_row=8 * hq * tq * tk)  # ~8 passes over the scores
        ctx.q, ctx.k, ctx.v, ctx.probs, ctx.out, ctx.scale = q, k, v, probs, out, scale
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, probs = ctx.q, ctx.k, ctx.v, ctx.probs
        xp = xp_of(q)
        if probs is None:  # an empty attention: no key or query took part
            return xp.zeros_like(q), xp.zeros_like(k), xp.zeros_like(v), None
        dq, dk, dv = _like(q, q.shape[1] == k.shape[1]), xp.empty_like(k), xp.empty_like(v)
        if not (_attention_backward_is_the_solution()  # (else the learner's exercise 2.4 runs)
                and compiled_attention.backward(g, q, k, v, probs, ctx.out, dq, dk, dv, ctx.scale)):
            parallel.rows(lambda *blocks: _attention_backward(*blocks, scale=ctx.scale), g, q, k, v,
                          probs, ctx.out, dq, dk, dv, work_per_row=8 * probs[0].size)
        return dq, dk, dv, None

    @staticmethod
    def flops(ctx, arrays, out):
        q, k = arrays[0], arrays[1]
        return 4 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3]

    @staticmethod
    def backward_flops(ctx):
        q, k = ctx.q, ctx.k
        return 8 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3]


def _like(a, keep_layout):
    """An empty array shaped as ``a``. With ``keep_layout``, in ``a``'s memory order: a Llama layer
    hands attention ``[B, T, H, D]`` arrays viewed as ``[B, H, T, D]``; outputs (and gradients)
    laid out the same way turn back into ``[B, T, H*D]`` without a copy. Without it (grouped-query
    heads), C order, so that ``_by_kv_head`` of it is a view that ``matmul(out=...)`` can fill."""
    xp = xp_of(a)
    return xp.empty_like(a) if keep_layout else xp.empty(a.shape, a.dtype)


def _by_kv_head(a, hkv):
    """[B, Hq, T, X] -> [B, Hkv, group*T, X]: the query heads sharing a KV head side by side, so
    that each KV head takes part in ONE matrix product per batch element."""
    return a.reshape(a.shape[0], hkv, a.shape[1] // hkv * a.shape[2], a.shape[-1])  # (no -1: X may be 0)


def _attention_forward(q, k, v, bias, out, probs, scale):
    """Softmax attention of a block of the batch; writes ``out`` and ``probs`` (both [B, Hq, Tq, .])."""
    hkv = k.shape[1]
    scores = probs  # computed in place: scores -> exp -> probabilities
    # (q * scale) k^T: scaling q is half the work of scaling the [Tq, Tk] scores (matmul: minilora.blas's)
    matmul(_by_kv_head(q * scale, hkv), k.swapaxes(-1, -2), out=_by_kv_head(scores, hkv))
    peak = None
    if bias is not None:
        scores += bias
        peak = float32_math.row_max(scores)
        peak[peak == -np.inf] = 0  # a row with no key left: exp(-inf) = 0 everywhere, not NaN
    scores -= float32_math.row_max(scores) if peak is None else peak  # softmax without overflow
    _softmax_exp(scores)
    total = scores.sum(axis=-1, keepdims=True)
    if bias is not None:
        total[total == 0] = 1  # that row's probabilities stay 0: its output and gradients are 0
    scores /= total
    matmul(_by_kv_head(probs, hkv), v, out=_by_kv_head(out, hkv))


def _softmax_exp(scores):
    """exp of attention's shifted scores, in place: float32 on the CPU as torch's exp (SLEEF's, which
    ``compiled_attention``'s C code computes too), else the array library's (CuPy's on a GPU)."""
    if type(scores) is np.ndarray and scores.dtype == float32:
        float32_math.sleef_exp(scores, out=scores)
    else:
        xp_of(scores).exp(scores, out=scores)


def _attention_backward(g, q, k, v, probs, out, dq, dk, dv, scale):
    """Gradients of a block of the batch, written into the blocks ``dq``, ``dk``, ``dv``.

    The Llama's attention runs it, float32 and float64. Where torch computes attention from separate ops,
    minilora does too, by design, and exercises 1.4 and 1.6 run instead: attention dropout in training, 3-D or
    5-D inputs (torch's math kernel), ``output_attentions`` (transformers' eager attention); and a 16-bit
    model's 4-D attention is torch's flash kernel (``ops/attention16.py``)."""
    hkv = k.shape[1]
    # EXERCISE 2.4: dq, dk, dv from the saved probs and output (query heads sharing a KV head sit side by side)
    # BEGIN SOLUTION
    p, g = _by_kv_head(probs, hkv), _by_kv_head(g, hkv)
    matmul(p.swapaxes(-1, -2), g, out=dv)
    ds = matmul(g, v.swapaxes(-1, -2))  # dP, turned into dS in place
    ds -= (g * _by_kv_head(out, hkv)).sum(axis=-1, keepdims=True)  # rowsum(dP * P) = rowsum(dO * O)
    ds *= p
    ds *= scale
    matmul(ds, k, out=_by_kv_head(dq, hkv))
    matmul(ds.swapaxes(-1, -2), _by_kv_head(q, hkv), out=dk)
    # END SOLUTION


_attention_backward_is_the_solution = solutions.solution_check(_attention_backward)


# ---- wrappers: PyTorch's signatures (torch.nn.functional) -------------------------------------
def _array(x):
    """The raw array behind a Tensor (constants such as ids, targets and masks), else ``x``."""
    return x._array if isinstance(x, Tensor) else x


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    """``weight[input]``, PyTorch's ``F.embedding``: row ``padding_idx`` (if given) gets no gradient.

    ``max_norm``: every row looked up whose ``norm_type``-norm exceeds it is first scaled down to
    that norm IN PLACE, in ``weight`` itself (as torch: the table changes as a side effect).
    ``scale_grad_by_freq``: see ``Embedding``. ``sparse=True`` (a sparse gradient) is refused."""
    _refuse("embedding", sparse=(sparse, False))
    no_complex_autograd("embedding", weight.dtype, weight)
    _two_dimensional_table(weight)
    no_meta_positions(weight, input)
    ids = _array(input)
    ids = np.asarray(ids) if isinstance(ids, (list, tuple, int)) else ids
    padding_idx = _row_index("embedding", padding_idx, weight.shape[0])
    if max_norm is not None:
        _renormalise_rows_(weight, ids, max_norm, norm_type)
    # the ids tensor itself where it can be (as torch's node saves it: saved-tensor hooks pack it, and
    # changing it in place before backward is torch's version error); ids on another device stay an array
    same = isinstance(input, Tensor) and input._array is ids and input._device is weight._device
    return Embedding.apply(input if same else ids, weight, padding_idx=padding_idx,
                           scale_grad_by_freq=scale_grad_by_freq)


def _two_dimensional_table(weight):
    """An embedding table is a matrix [rows, dim] (torch checks it before anything else)."""
    if weight.ndim != 2:
        raise RuntimeError("'weight' must be 2-D")


def _ids_out_of_range(ids, rows):
    """torch's error for ids outside the table: an IndexError, or (a table with no rows) index_select's
    RuntimeError."""
    if rows == 0:
        return with_note(RuntimeError("index_select(): self indexing axis dim should be positive"),
                         f"embedding: the table has no rows, got ids from {int(ids.min())} to {int(ids.max())}")
    return with_note(IndexError("index out of range in self"),
                     f"embedding: ids must lie in [0, {rows}), got values from {int(ids.min())} to {int(ids.max())}")


def _renormalise_rows_(weight, ids, max_norm, norm_type):
    """torch's ``embedding_renorm_``: each row of ``weight`` named in ``ids`` whose norm exceeds
    ``max_norm`` is multiplied by ``max_norm / (norm + 1e-7)``, in place and outside autograd."""
    xp = xp_of(weight._array)
    rows = xp.unique(xp.asarray(ids).reshape(-1))
    if rows.size and (rows.min() < 0 or rows.max() >= weight.shape[0]):  # (torch's renorm: an IndexError)
        raise IndexError(f"embedding: ids must lie in [0, {weight.shape[0]}), got values from "
                         f"{int(rows.min())} to {int(rows.max())}")
    # each norm rounded to the table's dtype, as torch's norm() gives it before .item()
    norms = xp.linalg.norm(upcast(weight._array[rows]), ord=norm_type, axis=-1)
    norms = norms.astype(weight.dtype).astype(np.float64)
    too_long = norms > max_norm
    if too_long.any():
        rows, scale = rows[too_long], max_norm / (norms[too_long] + 1e-7)
        table = weight._array
        # torch's row *= scale: the scale rounded to the table's dtype, the product computed in
        # float32 for 16-bit tables and rounded once
        values = upcast(table[rows])
        scale = scale.astype(table.dtype).astype(values.dtype)
        table[rows] = (values * scale[:, None]).astype(table.dtype)
        weight._bump_version()


def _refuse(fn, **options):
    """Raise a clear error for a PyTorch option minilora does not implement, given ``(value, default)``."""
    for name, (value, default) in options.items():
        if value != default:
            raise NotImplementedError(f"{fn}: {name}={value!r} is not supported by minilora "
                                      f"(only the default {default!r})")


# torch's CPU kernel behind each function that has no complex version (its NotImplementedError names it)
_KERNEL_WITHOUT_COMPLEX = {
    "mse_loss": "mse_cpu", "smooth_l1_loss": "smooth_l1_cpu", "huber_loss": "huber_cpu", "l1_loss": "abs_cpu",
    "layer_norm": "LayerNormKernelImpl", "group_norm": "GroupNormKernelImpl", "gelu": "GeluKernelImpl",
    "leaky_relu": "leaky_relu_cpu", "rrelu": "rrelu_with_noise_out_cpu", "logsigmoid": "log_sigmoid_cpu",
    "mish": "mish_cpu", "elu": "elu_cpu", "selu": "elu_cpu", "celu": "elu_cpu", "softplus": "softplus_cpu",
    "hardswish": "hardswish_cpu", "glu": "glu_cpu", "nll_loss": "nll_loss_out_frame",
    "binary_cross_entropy": "binary_cross_entropy", "binary_cross_entropy_with_logits": "log_sigmoid_cpu"}


def _floating_only(fn, *tensors):
    """torch has no integer kernel for ``fn``: an integer (or bool) tensor is refused with torch's
    NotImplementedError instead of being computed in integers (an int64 layer_norm gave zeros); a complex
    one in torch's words, naming its kernel."""
    for t in tensors:
        if isinstance(t, Tensor) and not is_floating(t.dtype):
            if t.dtype.kind == "c" and (fn in _KERNEL_WITHOUT_COMPLEX or fn == "cross_entropy"):
                kernel = _KERNEL_WITHOUT_COMPLEX.get(fn) or (  # (cross_entropy: its log_softmax over dim 1)
                    "log_softmax_lastdim_kernel_impl" if t.ndim <= 2 else "log_softmax_kernel_impl")
                raise NotImplementedError(f'"{kernel}" not implemented for \'{torch_name(t.dtype)}\'')
            kind = "complex" if t.dtype.kind == "c" else "integer"
            raise NotImplementedError(f"{fn}: not implemented for {kind} tensors (got {t.dtype}); "
                                      f"pass a floating tensor (e.g. x.float())")


def _floating_result(fn, input, target):
    """A pointwise loss needs a floating input or target (torch promotes a mix and computes it)."""
    if not (is_floating(input.dtype) or (isinstance(target, Tensor) and is_floating(target.dtype))):
        _floating_only(fn, input)


class EmbeddingArgumentError(AssertionError, ValueError):
    """A bad ``padding_idx`` or table for an embedding: torch asserts (an AssertionError); it is a
    ValueError too, as minilora raised before."""


def _row_index(fn, index, rows):
    """``index`` as a row number in [0, rows) (negative counts from the end, as in PyTorch), or None."""
    if index is None:
        return None
    if not -rows <= int(index) < rows:
        raise with_note(EmbeddingArgumentError("Padding_idx must be within num_embeddings"),
                        f"{fn}: padding_idx must lie in [-{rows}, {rows}), got {index}")
    return int(index) % rows


def legacy_reduction(size_average, reduce, reduction):
    """PyTorch's deprecated ``size_average``/``reduce`` pair, turned into ``reduction`` as torch does,
    with its warning naming the ``reduction`` to write instead (old tutorials pass size_average=False)."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    reduction = ("mean" if size_average else "sum") if reduce else "none"
    warn_at_caller(f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.")
    return reduction


def _check_reduction(fn, reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{fn}: {reduction!r} is not a valid value for reduction "
                         "(choose 'mean', 'sum' or 'none')")


def _classes_last(input, fn):
    """``input`` [N, C, d1, ...] (classes on axis 1, as PyTorch) or [C] as rows of logits [rows, C]."""
    if input.ndim == 0:
        raise ValueError(f"{fn}: input must have at least one dimension (the classes), got a scalar")
    if input.ndim == 1:
        return input.reshape(1, -1)
    if input.ndim == 2:
        return input
    # [N, C, d1, ..., dk] -> [N, d1, ..., dk, C] -> [N * d1 * ... * dk, C] (one copy)
    rows = input.shape[0] * math.prod(input.shape[2:])  # (not -1: C may be 0)
    return input.permute(0, *range(2, input.ndim), 1).reshape(rows, input.shape[1])


def _check_target_batch(fn, input, target_shape):
    """torch's ValueError when a batch of logits and its targets (indices, or probabilities not shaped as
    the input) disagree on the batch size."""
    if input.ndim >= 2 and (not target_shape or target_shape[0] != input.shape[0]):
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target "
                         f"batch_size ({target_shape[0] if target_shape else 'a scalar'}).")


def _class_targets(fn, input, targets):
    """Check class-index ``targets`` against ``input`` as PyTorch does; return them as one flat row."""
    xp = xp_of(input._array)
    targets = xp.asarray(targets)
    _check_target_batch(fn, input, targets.shape)  # (first: torch's ValueError whatever the dtype)
    expected = () if input.ndim == 1 else (input.shape[0],) + input.shape[2:]
    if input.ndim <= 2 and targets.ndim > 1:  # (torch's nll_loss checks the target's rank before its dtype)
        raise with_note(RuntimeError("0D or 1D target tensor expected, multi-target not supported"),
                        f"{fn}: class indices are one per row; class probabilities, a float target shaped as the "
                        f"input {tuple(input.shape)}")
    if input.ndim > 2 and targets.shape != expected:  # (nll_loss2d's: the shape before the dtype)
        raise _target_size_error(fn, input, targets, expected)
    if targets.dtype not in (np.int64, np.uint8):  # torch's rule: no int32 (or other) class indices
        raise with_note(RuntimeError(f"expected target dtype to be Long or Byte, but got {torch_name(targets.dtype)}"),
                        f"{fn}: class indices are int64 or uint8; class probabilities, a float target shaped as "
                        f"the input {tuple(input.shape)}")
    if targets.shape != expected:
        raise _target_size_error(fn, input, targets, expected)
    return targets.reshape(-1)


def _target_size_error(fn, input, targets, expected):
    hint = ""
    if input.ndim == 3 and targets.shape == input.shape[:2]:
        hint = (" (PyTorch reads [B, T, C] logits as classes on axis 1: pass "
                "logits.reshape(-1, C) and targets.reshape(-1), as transformers does)")
    return with_note(RuntimeError(f"Expected target size {list(expected)}, got {list(targets.shape)}"),
                     f"{fn}: the input {list(input.shape)} has its classes on axis 1{hint}")


@_amp.autocasts
def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """PyTorch's ``F.cross_entropy``: logits ``input`` [N, C], [N, C, d1, ...] or [C]; ``target``
    class indices ([N], [N, d1, ...], []) or class probabilities (a float tensor shaped as input).

    ``weight`` [C] rescales each class; 'mean' then divides by the summed weights of the counted
    targets. ``label_smoothing`` mixes the target with the uniform distribution, as torch. Model
    code with [B, T, C] logits flattens them to [B*T, C] first (PyTorch would read T as classes).

    bfloat16/float16 logits: as torch composes it, ``nll_loss(log_softmax(input))`` with the
    log-probabilities rounded to 16 bits in between (the fused float32 op would be more accurate,
    and differ from torch's loss by a few 16-bit steps on a long sum).
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction("cross_entropy", reduction)
    _floating_only("cross_entropy", input)
    ignore_index = _plain_index(ignore_index)
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    logits = _classes_last(input, "cross_entropy")
    weight_given, weight = weight, _class_weight("cross_entropy", weight, logits)
    if tuple(target.shape) == tuple(input.shape):  # class probabilities (torch's rule: by the shape)
        if not is_floating(_array(target).dtype):
            raise RuntimeError(f"Expected floating point type for target with class probabilities, got "
                               f"{torch_name(target.dtype)}")
        if ignore_index >= 0:  # a class to ignore: torch refuses rather than ignoring the option silently
            raise RuntimeError("ignore_index is not supported for floating point target")
        own = weight_given if isinstance(weight_given, Tensor) else None  # its own dtype: torch promotes
        loss = _soft_cross_entropy(input, logits, target, weight if own is None else own, reduction,
                                   label_smoothing)
    else:
        _check_class_weight_dtype(input, weight_given)
        _refuse_differentiable_class_weight(input, weight_given)
        targets = _class_targets("cross_entropy", input, _array(target))
        logp = None
        if _is_16bit_float(logits) or label_smoothing:  # torch's two ops, each rounded to 16 bits; with label
            # smoothing torch's graph too: log_softmax's backward runs once, on the nll's and the smoothing's
            # gradients added (the fused node's softmax - onehot, added to the smoothing's, rounds otherwise).
            # [N, C, d1, ...] stays in torch's layout, classes on axis 1: its kernels' orders, so its bits
            logp = input.log_softmax(1) if input.ndim > 2 else logits.log_softmax(-1)
            targets = targets.reshape(_per_target_shape(input)) if input.ndim > 2 else targets
            loss = nll_loss(logp, targets, weight, ignore_index=ignore_index, reduction=reduction)
        elif input.ndim > 2 and type(input._array) is np.ndarray:  # torch's two kernels along dim 1: their bits
            loss = nll_loss(input.log_softmax(1), target, weight_given, ignore_index=ignore_index, reduction=reduction)
            log_probs = ("LogSoftmaxBackward0", input)
            name_node(loss, "NllLoss2DBackward0", graph=(log_probs if input.ndim == 4 else ("ViewBackward0", log_probs),))
        else:  # the fused node: PyTorch's loss for class indices, label smoothing added below
            loss = CrossEntropy.apply(logits, targets, weight=weight, ignore_index=ignore_index,
                                      reduction=reduction)
            if input.ndim <= 2:  # torch's graph: nll_loss of log_softmax (one node here)
                name_node(loss, "NllLossBackward0", graph=(("LogSoftmaxBackward0", input),))
            else:  # nll_loss2d's, of a 4-D view of the log-probabilities where they are not 4-D
                log_probs = ("LogSoftmaxBackward0", input)
                name_node(loss, "NllLoss2DBackward0", graph=(log_probs if input.ndim == 4 else ("ViewBackward0", log_probs),))
        if label_smoothing:
            loss = (1 - label_smoothing) * loss + _smoothing_share(label_smoothing, logits.shape[1]) * \
                _smoothing_term(logp, targets, weight, ignore_index, reduction)
    if reduction == "none":  # (already that shape: no reshape, whose view node torch's graph has not)
        shape = () if input.ndim == 1 else (input.shape[0],) + tuple(input.shape[2:])
        return loss if tuple(loss.shape) == shape else loss.reshape(shape)
    return loss


def _refuse_differentiable_class_weight(input, weight):
    """torch's class-index losses have no gradient for ``weight``: one that requires grad (in grad mode) is its
    error, named after the kernel (nll_loss2d for inputs of 3 dims or more), not a gradient silently left out."""
    if isinstance(weight, Tensor) and weight.requires_grad and is_grad_enabled():
        kernel = "nll_loss2d_forward" if input.ndim > 2 else "nll_loss_forward"
        raise RuntimeError(f"The function '{kernel}' is not differentiable with respect to argument 'weight'. This "
                           "input cannot have requires_grad True.")


def _check_class_weight_dtype(input, weight):
    """torch's class-index losses take a ``weight`` of the logits' dtype only (minilora cast it)."""
    if isinstance(weight, Tensor) and weight.dtype != input.dtype:
        raise RuntimeError(f"expected scalar type {torch_name(input.dtype)} but found {torch_name(weight.dtype)}")


def _class_weight(fn, weight, logits):
    weight = _array(weight)
    if weight is not None and tuple(weight.shape) != (logits.shape[1],):
        raise RuntimeError(f"weight tensor should be defined either for all {logits.shape[1]} classes or no classes "
                           f"but got weight tensor of shape: {list(weight.shape)}")
    return None if weight is None else xp_of(logits._array).asarray(weight, dtype=logits.dtype)


def _smoothing_share(label_smoothing, n_classes):
    """Each class's share of the smoothing; with no classes, torch's C++ division: inf."""
    return label_smoothing / n_classes if n_classes else math.inf


def _per_target_shape(input):
    """The shape of the targets (and of a 'none' loss) for logits ``input`` [N, C, d1, ...]: [N, d1, ...]."""
    return (input.shape[0],) + tuple(input.shape[2:])


def _smoothing_term(logp, targets, weight, ignore_index, reduction):
    """``-sum_c w_c log p_c`` at each counted target of the log-probabilities ``logp`` ([N, C] or [N, C, d1, ...]:
    classes on axis 1, as torch sums them), reduced as the main loss: PyTorch's smoothing loss. An ignored target's
    term is set to 0 (torch's masked_fill), not multiplied by 0: a -inf logit there (masked logits on a padded
    position) gives inf * 0 = nan, where torch's loss stays finite."""
    xp = xp_of(logp._array)
    class_axis = (1, logp.shape[1]) + (1,) * (logp.ndim - 2)  # (torch's weight.view for broadcasting)
    per_class = logp if weight is None else logp * Tensor._make(weight.reshape(class_axis), logp.device, False, None)
    valid = targets != ignore_index
    rows = (-per_class.sum(1)).masked_fill(Tensor._make(~valid, logp.device, False, None), 0.0)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    if weight is None:
        counted = float(valid.sum())
    else:  # torch's weight.gather(...).sum(): its order of additions (16-bit: in float32, rounded to the weights')
        from .reduce import _sum_as_torch
        gathered = weight[targets[valid]]
        counted = float(_sum_as_torch(gathered, (0,), False) if gathered.dtype == np.float32
                        else upcast(gathered).sum().astype(weight.dtype))
    if counted == 0:  # nan, with torch's gradient: zeros, nan only in counted rows (weights summing to 0)
        return rows.flatten()[xp.flatnonzero(valid)].sum() * float("nan")
    return rows.sum() / counted  # a Python number: rows' dtype, the count not rounded to 16 bits


def _soft_cross_entropy(input, logits, target, weight, reduction, label_smoothing):
    """Cross-entropy against class probabilities: ``-sum_c w_c t_c log p_c`` per row. Built from
    differentiable ops, so a target that requires grad gets its gradient, as in torch."""
    if tuple(target.shape) != tuple(input.shape):
        _check_target_batch("cross_entropy", input, tuple(target.shape))
        raise RuntimeError(f"cross_entropy: class-probability targets must have the input's shape "
                           f"{input.shape}, got {tuple(target.shape)}")
    if not isinstance(target, Tensor):
        target = Tensor._make(xp_of(logits._array).asarray(target, dtype=logits.dtype), logits.device, False, None)
    if input.ndim > 2:  # [N, C, d1, ...] in torch's layout, classes on axis 1: its kernels' orders, so its bits
        log_probs, class_axis = input.log_softmax(1), (1, input.shape[1]) + (1,) * (input.ndim - 2)
    else:
        log_probs, class_axis, target = logits.log_softmax(-1), (logits.shape[1],), _classes_last(target, "")
    n_classes = logits.shape[1]
    if label_smoothing:
        target = target * (1 - label_smoothing) + _smoothing_share(label_smoothing, n_classes)
    terms = log_probs * target  # torch's order (each product rounded in 16-bit dtypes)
    if weight is not None:  # a Tensor keeps its dtype (float64 weights: a float64 loss, as torch)
        weight = weight if isinstance(weight, Tensor) else Tensor._make(weight, logits.device, False, None)
        terms = terms * weight.reshape(class_axis)
    if reduction == "none":
        return -terms.sum(1 if input.ndim > 2 else -1)
    # one sum over every term, as torch; 'mean' divides by the number of rows (samples), with or
    # without a weight, as PyTorch
    samples = float(logits.shape[0]) if n_classes else math.nan  # (torch's numel / C: 0 / 0 with no classes)
    return -terms.sum() if reduction == "sum" else -terms.sum() / samples


class NllLoss(Function):
    """``-input[i, target_i] * w_i`` per row of log-probabilities [N, C] (``F.nll_loss``); the
    gradient goes to that one entry per row."""

    @staticmethod
    def forward(ctx, logp, targets, weight=None, ignore_index=-100, reduction="mean"):
        xp = xp_of(logp)
        valid, safe = _counted_targets(xp, targets, logp.shape[1], ignore_index, "nll_loss")
        row_weight = xp.where(valid, 1 if weight is None else _weight_of(weight, safe), 0).astype(logp.dtype)
        picked = logp[xp.arange(len(logp)), safe] if logp.shape[1] else xp.zeros(len(logp), logp.dtype)
        losses = -picked * row_weight  # (no classes: every target was ignored, nothing to pick)
        losses[~valid] = 0  # torch's 0 for an ignored row (its class 0's -inf times 0 would be nan)
        ctx.shape, ctx.safe, ctx.row_weight, ctx.reduction = logp.shape, safe, row_weight, reduction
        ctx.counted = valid
        if reduction == "none":
            return losses
        if logp.itemsize == 2 and xp is np:  # 16-bit floats: torch's CPU order and roundings (_cascade_sum)
            return _nll_reduced_in_16_bits(ctx, xp, losses, row_weight, valid, weight is not None)
        # (16-bit on a GPU: torch's CUDA kernel sums in float32 and rounds once, as here)
        wide_losses, wide_weights = upcast(losses), upcast(row_weight)
        ctx.divisor = _total_weight(wide_weights, valid) if reduction == "mean" else 1
        with np.errstate(invalid="ignore"):  # every row ignored: 0 / 0 = nan, silently, as torch
            total = _loss_total(wide_losses, valid)  # (torch's cascade of partial sums)
            return (total / wide_losses.dtype.type(ctx.divisor)).astype(logp.dtype)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        if ctx.reduction == "mean" and ctx.divisor == 0:
            return _gradient_over_no_weight(xp, ctx.shape, ctx.counted, ctx.row_weight.dtype, ctx.safe)
        scale = g * ctx.row_weight if ctx.reduction == "none" else (g / ctx.divisor) * ctx.row_weight
        grad = xp.zeros(ctx.shape, dtype=ctx.row_weight.dtype)
        if grad.size:  # (an ignored row keeps its +0s: torch's kernel never writes it, where -scale was -0)
            grad[xp.arange(ctx.shape[0]), ctx.safe] = xp.where(ctx.counted, -scale, 0)
        return grad


def _nll_reduced_in_16_bits(ctx, xp, losses, row_weight, valid, weighted):
    """'sum' or 'mean' of nll_loss's 16-bit row losses as torch's CPU kernel computes them: a cascade
    of 16-bit partial sums (``_cascade_sum``) over the counted rows, of the losses and (with a
    class weight) of the weights; 'mean' divides by that weight sum, or by the count of counted
    rows rounded to the 16-bit dtype, in 16 bits."""
    dtype = losses.dtype
    rows = xp.flatnonzero(valid)  # (ignored rows take no part, not even in the flush points)
    if ctx.reduction == "sum":
        ctx.divisor = 1
        return xp.asarray(_cascade_sum(losses[rows], rows, len(losses)), dtype)
    weights = _cascade_sum(row_weight[rows], rows, len(losses)) if weighted else dtype.type(len(rows))
    total = _cascade_sum(losses[rows], rows, len(losses))
    ctx.divisor = float(weights)  # (backward: g / divisor in 16 bits, as torch's)
    with np.errstate(all="ignore"):  # every row ignored: 0 / 0 = nan, silently, as torch
        return xp.asarray(total / weights, dtype)


def _cascade_sum(values, positions, n, levels=8):
    """The sum of 16-bit ``values`` (those of rows ``positions`` out of ``n``) as torch's nll_loss
    adds them: partial sums on ``levels`` levels, in the values' dtype (every addition rounds). Each
    value is added to level 0; at a row whose index is a multiple of ``step`` (16) level 0 is added
    into level 1 and restarts from 0; at a multiple of ``step**2`` level 1 into level 2, and so on;
    at the end the levels are added up from level 0. (A running 16-bit sum would stall -- 256 ones
    in bfloat16 -- and one float32 sum rounded once would be another number.) Vectorised: the
    values between two flush points are summed side by side, one column at a time."""
    xp = xp_of(values)
    power = max(4, int(np.ceil(np.log2(max(n, 1)))) // levels)
    dtype, leftovers = values.dtype, []
    for level in range(levels):
        if level + 1 < levels:  # (the last level is never added into another)
            flush = positions % (1 << (power * (level + 1))) == 0
        else:
            flush = xp.zeros(len(values), bool)
        segment = xp.cumsum(flush) - flush  # which run of partial sums each value joins
        count = int(segment[-1]) + 1 if len(values) else 0
        starts = xp.searchsorted(segment, xp.arange(count))
        offset = xp.arange(len(values)) - starts[segment]
        table = xp.zeros((count, int(offset.max()) + 1 if len(values) else 0), dtype)
        table[segment, offset] = values
        sums = xp.zeros(count, dtype)
        for column in table.T:  # one 16-bit rounding per addition, as torch's loop
            sums = sums + column
        closed = xp.flatnonzero(flush)  # the runs that ended at a flush point go up a level
        leftovers.append(sums[-1] if count > len(closed) else dtype.type(0))  # an open run stays here
        values, positions = sums[:len(closed)], positions[closed]
    total = dtype.type(0)
    for partial in leftovers:
        total = dtype.type(total + partial)
    return total


def _plain_index(ignore_index):
    """A 0-d tensor's ``ignore_index`` as the int torch's parser reads from it (compared with the targets' array it
    made a Tensor of the mask, which the kernels took for a CuPy array)."""
    return int(ignore_index) if isinstance(ignore_index, Tensor) else ignore_index


@_amp.autocasts
@saving_as_torch("input", "target", "weight")  # what torch's one node keeps
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """PyTorch's ``F.nll_loss``: ``input`` holds log-probabilities ([N, C], [N, C, d1, ...] or [C])."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction("nll_loss", reduction)
    _floating_only("nll_loss", input)
    ignore_index = _plain_index(ignore_index)
    _check_class_weight_dtype(input, weight)
    _refuse_differentiable_class_weight(input, weight)
    logp = _classes_last(input, "nll_loss")
    targets = _class_targets("nll_loss", input, _array(target))
    loss = NllLoss.apply(logp, targets, weight=_class_weight("nll_loss", weight, logp),
                         ignore_index=ignore_index, reduction=reduction)
    backward_reads(loss, logp)  # (torch's nll_loss_backward(grad, self, target, ...))
    if reduction == "none":
        return loss.reshape(() if input.ndim == 1 else (input.shape[0],) + input.shape[2:])
    return loss


def _pointwise_loss(fn, per_element, input, target, reduction, weight, takes_complex=False):
    _check_reduction(fn, reduction)
    if not (takes_complex and input.dtype.kind == "c"):  # (l1_loss: |z - w| of complex tensors, as torch's)
        _floating_result(fn, input, target)
    if isinstance(target, Tensor):
        input, target = _broadcast_target(fn, input, target)
    loss = per_element(input - target)
    if weight is None:
        return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()
    if tuple(weight.shape) != tuple(input.shape):
        raise ValueError(f"{fn}: weights and input must have the same size, got {tuple(weight.shape)} "
                         f"and {tuple(input.shape)}")
    loss = loss * weight
    if reduction == "none":
        return loss
    # 'mean' with a weight is the weighted mean sum(w * loss) / sum(w), as torch
    return loss.sum() if reduction == "sum" else loss.sum() / weight.sum()


@_amp.autocasts
@saving_as_torch("input", "target")  # what torch's one node keeps
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """PyTorch's ``F.mse_loss``: ``(input - target)^2`` (times ``weight``), reduced."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if (weight is None and isinstance(target, Tensor) and input.dtype == target.dtype and type(input._array) is np.ndarray
            and (input.dtype in _SUMMED or _is_16bit_float(input))):  # (16-bit: the kernel's steps each rounded)
        _check_reduction("mse_loss", reduction)
        x, t = _broadcast_target("mse_loss", input, target)
        return name_node(MseLoss.apply(x, t, reduction=reduction), "MseLossBackward0", input, target,
                         graph=(input, target))
    loss = _pointwise_loss("mse_loss", lambda d: d * d, input, target, reduction, weight)
    # torch's one node (minilora's: a few ops)
    return name_node(loss, "MseLossBackward0", input, target, graph=(input, target))


@_amp.autocasts
def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """PyTorch's ``F.l1_loss``: ``|input - target|`` (times ``weight``), reduced."""
    return _pointwise_loss("l1_loss", lambda d: d.abs(), input, target,
                           legacy_reduction(size_average, reduce, reduction), weight, takes_complex=True)


def _reduced(fn, loss, reduction, graph=None):
    """The binary cross-entropies reduce as torch's: a plain mean even with ``weight``. ``graph``: the
    inputs of torch's one node for a loss that minilora computes with several (_ONE_NODE_LOSSES), which
    the result's node shows (its name, its next_functions), reduction included."""
    _check_reduction(fn, reduction)
    out = loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()
    return out if graph is None else name_node(out, _ONE_NODE_LOSSES[fn], *graph, graph=graph)


# torch's node for a loss its kernel computes in one (its derivatives.yaml entry), reduction included
_ONE_NODE_LOSSES = {"binary_cross_entropy": "BinaryCrossEntropyBackward0", "huber_loss": "HuberLossBackward0",
                    "soft_margin_loss": "SoftMarginLossBackward0", "multi_margin_loss": "MultiMarginLossBackward0",
                    "multilabel_margin_loss": "MultilabelMarginLossBackward0"}


class BinaryCrossEntropy(Function):
    """Elementwise ``-[y log x + (1 - y) log(1 - x)]``, each log clamped at -100, with torch's own
    backward ``(x - y) / max(x (1 - x), 1e-12)`` -- finite at x = 0 and 1, where the chain rule
    through the clamped logs would give NaN (and a different number from torch's). 16-bit floats:
    the input's gradient step by step in 16 bits, as torch's (bit for bit); the target's, whose
    two logs nearly cancel, from float32 logs, rounded once (torch's rounds its own way)."""

    @staticmethod
    def forward(ctx, x, y):
        xp = xp_of(x)
        with np.errstate(divide="ignore"):  # (torch's scalar kernel: C's log and log1p, glibc's logf for float32)
            log_x, log_1mx = xp.maximum(_c_log(xp, x), -100), xp.maximum(_c_log(xp, -x, log1p=True), -100)
        ctx.x, ctx.y = x, y
        return (y - 1) * log_1mx - y * log_x  # torch's order: 16-bit floats round each step, as its kernel

    @staticmethod
    def backward(ctx, g):
        xp, (nx, ny) = xp_of(g), ctx.needs_input_grad
        x, y = ctx.x, ctx.y
        gx = g * (x - y) / xp.maximum(x * (1 - x), 1e-12) if nx else None
        if not ny:
            return gx, None
        if x.dtype.itemsize == 2 and is_floating(x.dtype):  # torch's -logit(x) * g: logit's 16-bit steps
            return gx, (-_bce_logit(x)) * g
        wide = upcast(x)
        with np.errstate(divide="ignore", invalid="ignore"):  # torch's: the logs unclamped, inf at 0 and 1
            gy = -(xp.log(wide) - xp.log1p(-wide)) * upcast(g)
        return gx, gy.astype(g.dtype, copy=False)


def _bce_logit(x):
    """``log(x / (1 - x))`` as binary_cross_entropy's target gradient takes it: MKL's log for float32/float64, and
    for 16-bit floats log(x / (1 - x)) each step rounded to the dtype (inf at x = 1)."""
    if not (x.dtype.itemsize == 2 and is_floating(x.dtype)):
        return float32_math.vml("log", x / (x.dtype.type(1) - x))
    xp = xp_of(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (x / (1 - x)).astype(float32)  # (NumPy's 16-bit ops round each, as torch's)
        return xp.where(x == 1, np.inf, _c_log(xp, ratio).astype(x.dtype)).astype(x.dtype)


def _log_sigmoid(xp, x):
    """``log(sigmoid(x))``, stable; 16-bit floats computed in float32 and rounded once (torch's kernel); float32
    torch's kernel step by step (SLEEF's exp and log1p, as F.logsigmoid: ``float32_math.vectorized``)."""
    if type(x) is np.ndarray and x.dtype == np.float32:
        with np.errstate(invalid="ignore"):
            return np.minimum(x, 0) - float32_math.vectorized("log1p", float32_math.vectorized("exp", -np.abs(x)))
    wide = upcast(x)
    return (xp.minimum(wide, 0) - xp.log1p(xp.exp(-xp.abs(wide)))).astype(x.dtype, copy=False)


class BinaryCrossEntropyWithLogits(Function):
    """``binary_cross_entropy_with_logits`` as one node: per element ``(1 - y) x - w_p logsigmoid(x)``,
    ``w_p = (p - 1) y + 1`` for a ``pos_weight`` p, times ``weight``, then reduced. Forward: torch's
    ops in torch's order, each rounded once to a 16-bit dtype (the loss is torch's, bit for bit; a
    16-bit sum or mean accumulates in float32). Backward: torch's own formulas in its order,
    ``((d * g) * weight) / n`` with ``d = (p y + 1 - y) sigmoid(x) - p y`` (``sigmoid(x) - y``
    without p) for x and ``d = logsigmoid(-x) - p logsigmoid(x)`` (``-x``) for y -- not the
    composition's, whose two terms nearly cancel in 16 bits. (pos_weight and weight get no
    gradient here, as in torch.)"""
    torch_layout = "elementwise"  # (reduction='none': torch's TensorIterator result)

    @staticmethod
    def forward(ctx, x, y, weight, pos_weight, reduction):
        xp = xp_of(x)
        ctx.x, ctx.y, ctx.weight, ctx.pos_weight, ctx.reduction = x, y, weight, pos_weight, reduction
        log_sigmoid = _log_sigmoid(xp, x)
        if pos_weight is not None:
            log_sigmoid = log_sigmoid * ((pos_weight - 1) * y + 1)
        loss = (1 - y) * x - log_sigmoid
        if weight is not None:
            loss = loss * weight
        if reduction == "none":
            return loss
        # (torch's loss.sum() / loss.mean(): float32 and float64 in its order of additions; 16 bits: in float32,
        # rounded once)
        from .reduce import _sum_as_torch
        total = _sum_as_torch(loss, tuple(range(loss.ndim)), False) if type(loss) is np.ndarray and loss.dtype in (
            np.float32, np.float64) else upcast(loss).sum()
        return xp.asarray(total if reduction == "sum" else total / loss.size).astype(x.dtype)

    @staticmethod
    def backward(ctx, g):
        xp, (nx, ny) = xp_of(g), ctx.needs_input_grad[:2]
        x, y, p = ctx.x, ctx.y, ctx.pos_weight
        gx = gy = None
        if nx:
            s = (float32_math.sigmoid(x) if type(x) is np.ndarray and x.dtype == np.float32  # (torch's kernel:
                 else (1 / (1 + xp.exp(-upcast(x)))).astype(x.dtype, copy=False))  # input.sigmoid(); else one rounding)
            if p is None:
                gx = _scaled_back(ctx, s - y, g)
            else:
                t = p * y
                gx = _scaled_back(ctx, (t + 1 - y) * s - t, g)
        if ny:
            gy = _scaled_back(ctx, -x if p is None else _log_sigmoid(xp, -x) - _log_sigmoid(xp, x) * p, g)
        return (gx, gy) + (None,) * (len(ctx.needs_input_grad) - 2)


def _scaled_back(ctx, d, g):
    """``((d * g) * weight) / n`` (n: the element count for 'mean'), in torch's order of roundings."""
    d = d * g
    if ctx.weight is not None:
        d = d * ctx.weight
    if ctx.reduction == "mean":
        d = d / d.dtype.type(d.size)
    return xp_of(d).broadcast_to(d, ctx.x.shape)


@_amp.autocasts
def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """PyTorch's ``F.binary_cross_entropy_with_logits``: ``-[p y log s(x) + (1 - y) log(1 - s(x))]``
    with ``p = pos_weight``, computed as torch composes it, without overflow:
    ``(1 - y) x - (1 + (p - 1) y) logsigmoid(x)`` -- the same ops in the same order, so 16-bit
    results are torch's bit for bit (each op rounds once, as each of torch's does)."""
    _binary_dtypes("binary_cross_entropy_with_logits", input, target)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"Target size ({torch_spelling(target.shape)}) must be the same as input size "
                         f"({torch_spelling(input.shape)})")
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    for name, tensor in (("weight", weight), ("pos_weight", pos_weight)):
        if isinstance(tensor, Tensor) and tensor.requires_grad:  # (torch's words)
            raise RuntimeError(f"The function 'binary_cross_entropy_with_logits' is not differentiable with "
                               f"respect to argument '{name}'. This input cannot have requires_grad True.")
    if any(isinstance(a, Tensor) and a.dtype != input.dtype for a in (target, weight, pos_weight)):
        return _reduced("binary_cross_entropy_with_logits",
                        _bce_with_logits_of_mixed_dtypes(input, target, weight, pos_weight), reduction)
    return BinaryCrossEntropyWithLogits.apply(input, target, weight, pos_weight, reduction)


def _bce_with_logits_of_mixed_dtypes(input, target, weight, pos_weight):
    """torch's composite op by op, for tensors of several dtypes: its in-place steps keep their left
    operand's dtype, so the loss comes out in the *target's* dtype (float64 logits and float32 labels:
    a float32 loss), each step computed in the promoted dtype and stored."""
    from .elementwise import logsigmoid
    log_sigmoid_input = logsigmoid(input)
    if pos_weight is not None:
        log_weight = (pos_weight - 1) * target + 1
        log_sigmoid_input = (log_sigmoid_input * log_weight).to(input.dtype)
    loss = ((1 - target) * input).to(target.dtype)
    loss = (loss - log_sigmoid_input).to(target.dtype)
    return loss if weight is None else (loss * weight).to(target.dtype)


def _binary_dtypes(fn, input, target):
    """Floating probabilities or logits, and a floating target (torch refuses an integer one rather
    than promoting it: labels must be cast, e.g. ``y.float()``)."""
    _floating_only(fn, input)
    if isinstance(target, Tensor) and not is_floating(target.dtype):
        raise RuntimeError(f"{fn}: Found dtype {target.dtype} but expected {input.dtype} (the target "
                           f"must be a floating tensor, e.g. y.float())")


@_amp.autocasts
def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """PyTorch's ``F.binary_cross_entropy`` of probabilities: ``-[y log x + (1 - y) log(1 - x)]``,
    each log clamped at -100 as torch does (so x = 0 or 1 gives a finite loss). 16-bit floats: torch's
    kernel rounds every step of ``(y - 1) max(log1p(-x), -100) - y max(log x, -100)`` to 16 bits,
    and so do NumPy's ufuncs here (bit for bit); dtypes promoted as torch's."""
    _binary_dtypes("binary_cross_entropy", input, target)
    if isinstance(target, Tensor) and target.dtype != input.dtype:  # torch's kernel: one dtype, no promotion
        raise RuntimeError(f"Found dtype {torch_name(target.dtype)} but expected {torch_name(input.dtype)}")
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"Using a target size ({torch_spelling(target.shape)}) that is different to the "
                         f"input size ({torch_spelling(input.shape)}) is deprecated. Please ensure they "
                         f"have the same size.")
    for name, t in (("input", input), ("target", target)):  # (a nan is outside too: torch's check)
        if t.is_meta:  # (no values to check, as torch's meta kernel)
            continue
        values = t.detach().double().numpy(force=True)
        if not ((values >= 0) & (values <= 1)).all():
            raise RuntimeError(f"all elements of {name} should be between 0 and 1")  # (a silent loss once)
    reduction = legacy_reduction(size_average, reduce, reduction)
    if isinstance(weight, Tensor) and tuple(weight.shape) != tuple(input.shape):
        weight = weight.expand(tuple(target.shape))  # (torch's F.binary_cross_entropy: the kernel's weight as wide
        # as the target; a composed loss * weight rounded the gradient's products in another order)
    if ((input.dtype in _SUMMED or _is_16bit_float(input)) and type(input._array) is np.ndarray
            and isinstance(target, Tensor) and (weight is None or (isinstance(weight, Tensor) and weight.dtype == input.dtype and not weight.requires_grad
                                and tuple(weight.shape) == tuple(input.shape)))):
        _check_reduction("binary_cross_entropy", reduction)
        out = BinaryCrossEntropyLoss.apply(input, target, weight=None if weight is None else weight._array,
                                           reduction=reduction)
        return name_node(out, "BinaryCrossEntropyBackward0", graph=(input, target) if weight is None else
                         (input, target, weight))
    loss = BinaryCrossEntropy.apply(input, target)
    if weight is not None:  # torch's loss.mul_(weight): in the promoted dtype, stored in the input's
        loss = loss * weight if weight.dtype == loss.dtype else (loss * weight).to(loss.dtype)
    return _reduced("binary_cross_entropy", loss, reduction,
                    graph=(input, target) if weight is None else (input, target, weight))


def _reduced_in_kernel(loss, reduction, xp):
    """A loss kernel's own reduction, as torch's fused loss kernels end: the elementwise loss, or its sum or mean over
    every element in torch's order."""
    from .reduce import _mean_as_torch, _sum_as_torch
    if reduction == "none":
        return loss
    summed = _sum_as_torch if reduction == "sum" else _mean_as_torch
    return xp.asarray(summed(loss, tuple(range(loss.ndim)), False))


class BinaryCrossEntropyLoss(Function):
    """``binary_cross_entropy`` (float32, float64, and 16-bit floats each step rounded) as torch's one node, reduction
    included: the loss as ``BinaryCrossEntropy``'s, times ``weight``, summed or averaged as torch's sum; its backward
    torch's kernels in their order (a mean's ``/ n`` last: composed, a 16-bit ``g / n`` came first), ``((g (x - y)) / max((1 - x) x, 1e-12)) * weight / n`` for the input and ``-logit(x) g * weight / n``
    for the target (``n`` for a mean only)."""
    torch_layout = "contiguous"

    @staticmethod
    def forward(ctx, x, y, *, weight, reduction):
        ctx.x, ctx.y, ctx.weight, ctx.reduction = x, y, weight, reduction
        loss = BinaryCrossEntropy.forward(types.SimpleNamespace(), x, y)
        if weight is not None:
            loss = loss * weight
        return _reduced_in_kernel(loss, reduction, np)

    @staticmethod
    def backward(ctx, g):
        x, y, weight = ctx.x, ctx.y, ctx.weight
        real = x.dtype.type
        grads = []
        with np.errstate(all="ignore"):
            for needed, formula in ((ctx.needs_input_grad[0], lambda: (g * (x - y)) / np.maximum((real(1) - x) * x,
                                                                                              real(1e-12))),
                                    (ctx.needs_input_grad[1], lambda: -_bce_logit(x) * g)):
                grad = formula() if needed else None
                if grad is not None and weight is not None:
                    grad = grad * weight
                if grad is not None and ctx.reduction == "mean":
                    grad = grad / real(x.size)
                grads.append(grad)
        return tuple(grads)


def dropout_noise(array, p, generator=None, channels=False):
    """torch's dropout mask for ``array`` (bool, True = kept): ``noise.bernoulli_(1 - p)`` from
    ``generator`` (the global one if None), so torch's mask for the same seed. ``channels`` (torch's
    feature dropout): one draw per [sample, channel], shared by its positions. ``p = 1`` draws
    nothing (torch's shortcut)."""
    from ..factories import _drawn_in_memory_order
    if p == 1:
        return xp_of(array).zeros(array.shape[:2] + (1,) * (array.ndim - 2) if channels else array.shape, bool)
    refuse_complex("bernoulli_scalar_cpu_", array.dtype)  # (torch draws its noise in the input's dtype)
    generator = _random.resolve(generator)
    if channels:  # (torch's noise tensor is a fresh contiguous one)
        return generator.bernoulli(array.shape[:2] + (1,) * (array.ndim - 2), 1 - p)
    return _drawn_in_memory_order(array, lambda shape: generator.bernoulli(shape, 1 - p),  # (empty_like(input);
                                  batch_in_front=True)  # under vmap torch's dropout draws the batch in front)


def dropout_scale(p, dtype):
    """The kept values' factor, as torch's ``noise.div_(1 - p)`` computes it in the input's dtype:
    ``1 / (1 - p)`` with ``1 - p`` rounded to the dtype (float for 16-bit ones); 0 when ``p = 1``."""
    if p == 1:
        return dtype.type(0)
    if dtype == np.float64:
        return dtype.type(1.0 / (1.0 - p))
    return np.asarray(np.float32(1) / np.float32(1 - p)).astype(dtype)[()]


def _generator_for(seed):
    """``seed=`` (minilora's extension of the dropout functions): a generator of that seed, else the
    global one."""
    return None if seed is None else _random.Generator().manual_seed(int(seed))


def dropout(input, p=0.5, training=True, inplace=False, *, seed=None):
    """Inverted dropout (PyTorch's ``F.dropout``), torch's mask for the same seed; ``seed`` fixes the
    mask (default: drawn from ``minilora.manual_seed``'s generator)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")  # (torch's words)
    if training is not True and training is not False:  # ("no" is true: dropout ran where the caller said no)
        bool_argument("dropout", "train", training, position=3)
    if not training or p == 0:
        return input
    generator = _generator_for(seed)
    if input.dtype.kind in "biu" and p < 1:  # the 1 / (1 - p) scale has no integer result (complex: the noise's
        _refuse_integer_dropout(input, p, generator)  # refusal, dropout_noise)
    if input.is_meta:  # (no values, so no mask: nothing is drawn, as torch's meta kernel draws nothing)
        return input if inplace else _as_torchs_dropout(input * 1.0, input)
    if inplace:  # torch's dropout_: the masked values written into input (see Tensor._inplace)
        return input._inplace(lambda x: Dropout.apply(x, p=p, generator=generator))
    return _as_torchs_dropout(Dropout.apply(input, p=p, generator=generator), input)


def _refuse_integer_dropout(input, p, generator=None, channels=False, noise_dtype=None):
    """torch's error for dropout of an integer tensor, raised where torch's is: its noise (in the input's dtype,
    ``noise_dtype`` once an op changed it) is drawn, then scaling it by a float fails."""
    if not input.is_meta:  # (a meta tensor's noise is drawn from nothing)
        dropout_noise(input._array, p, generator, channels)
    kind = torch_name(noise_dtype or input.dtype)
    raise RuntimeError(f"result type Float can't be cast to the desired output type {kind}")


def _as_torchs_dropout(out, input):
    """torch's CPU dropout is ``input * noise``: its node is MulBackward0, with no edge for the noise."""
    return name_node(out, "MulBackward0", input, graph=(input, None))


def feature_dropout(input, p, training, seed=None):
    """torch's ``feature_dropout``: whole channels (dimension 1 of [N, C, ...]) zeroed with
    probability ``p``, the rest scaled by ``1/(1-p)``: ``dropout1d/2d/3d``."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0 or input.numel() == 0:
        return input
    # (torch's _dropout_impl: the shortcuts above and p = 1's input * 0 come before the noise's shape check)
    if input.ndim < 2 and p < 1:
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    if input.dtype.kind in "biu" and p < 1:
        _refuse_integer_dropout(input, p, _generator_for(seed), channels=True)
    if input.is_meta:  # (no mask drawn: see dropout)
        return _as_torchs_dropout(input * 1.0, input)
    return _as_torchs_dropout(Dropout.apply(input, p=p, generator=_generator_for(seed), channels=True), input)


def swiglu(gate, up):
    """``silu(gate) * up`` in one op (the activation of Llama's MLP).

    16-bit floats: as the two torch ops Llama's MLP runs (``act_fn(gate) * up``), each rounded once --
    the fused float32 op would round once in all, and differ from transformers' numbers. Mixed dtypes or
    shapes: the two ops too, so the product promotes and broadcasts as torch's ``F.silu(gate) * up``."""
    if _is_16bit_float(gate) or _mixed_swiglu_operands(gate, up):
        from .elementwise import silu
        return silu(gate) * up
    return SwiGLU.apply(gate, up)


def _mixed_swiglu_operands(gate, up):
    """True where the fused node does not apply: a Python number, another dtype or another shape for up."""
    if not isinstance(up, Tensor) or not isinstance(gate, Tensor):
        return True
    return up.dtype != gate.dtype or tuple(up.shape) != tuple(gate.shape)


def _normalized_width(fn, input, normalized_shape, **params):
    """The number of trailing elements that ``normalized_shape`` covers, checked as PyTorch does."""
    if isinstance(normalized_shape, Tensor) or hasattr(normalized_shape, "dtype") and \
            getattr(normalized_shape, "ndim", 0) > 0:
        raise TypeError(f"{fn}: normalized_shape must be an int or a sequence of ints, got an array; "
                        f"PyTorch's order is {fn}(input, normalized_shape, weight, ...)")
    shape = _ints_of_normalized_shape(fn, normalized_shape)
    if not shape:
        raise RuntimeError(f"{fn}: expected normalized_shape to be at least 1-dimensional")
    if tuple(input.shape[-len(shape):]) != shape or input.ndim < len(shape):
        star = "*, " if fn == "layer_norm" else "*"  # (torch's two kernels write it so)
        raise RuntimeError(f"Given normalized_shape={list(shape)}, expected input with shape "
                           f"[{star}{', '.join(map(str, shape))}], but got input of size{list(input.shape)}")
    for name, param in params.items():
        if param is not None and tuple(param.shape) != shape:
            raise RuntimeError(f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                               f"{list(param.shape)} and normalized_shape = {list(shape)}")
    return math.prod(shape)


def _ints_of_normalized_shape(fn, normalized_shape):
    """``normalized_shape`` as a tuple of ints. A bare int is torch's TypeError here (F.layer_norm and
    F.rms_norm take a tuple or list; only the nn.LayerNorm / nn.RMSNorm modules take an int), and
    so is a float or bool element (torch would not round 4.0 or read True as 1)."""
    if isinstance(normalized_shape, (int, np.integer)):
        raise TypeError(f"{fn}(): argument 'normalized_shape' (position 2) must be tuple of ints, not "
                        f"{type(normalized_shape).__name__}")
    for pos, n in enumerate(normalized_shape):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"{fn}(): argument 'normalized_shape' (position 2) must be tuple of ints, but "
                            f"found element of type {type(n).__name__} at pos {pos}")
    return tuple(int(n) for n in normalized_shape)


@_amp.autocasts
def rms_norm(input, normalized_shape, weight=None, eps=None):
    """PyTorch's ``F.rms_norm``: ``x / sqrt(mean(x^2) + eps) * weight`` over the trailing
    ``normalized_shape`` dimensions. ``eps=None`` is the machine epsilon of the dtype it computes in,
    as torch: float32's for bfloat16/float16 (torch's documentation says the input's; its kernel
    takes float32's, 2^-23, not bfloat16's 2^-7)."""
    if isinstance(input, Tensor) and input.dtype.kind == "c":
        return _complex_rms_norm(input, normalized_shape, weight, eps)
    if eps is None:  # torch takes the eps of the dtype it computes in: float32's for 16-bit inputs
        _floating_only("rms_norm", input)  # (before finfo fails on an integer dtype)
        eps = float(np.finfo(compute_dtype(input.dtype)).eps)
    return _rms_norm(input, normalized_shape, weight, eps)


def _complex_rms_norm(input, normalized_shape, weight, eps):
    """torch's composite for a complex input, op by op: ``input * rsqrt(mean(input ** 2) + eps)`` (z squared,
    not |z|^2), times ``weight``; ``eps=None`` is the real dtype's epsilon (complex128: float64's)."""
    _normalized_width("rms_norm", input, normalized_shape, weight=weight)
    eps = float(np.finfo(input.dtype).eps) if eps is None else eps
    dims = tuple(range(input.ndim - len(normalized_shape), input.ndim))
    out = input.mul(input.pow(2).mean(dims, keepdim=True).add(eps).rsqrt())
    return out if weight is None else out.mul(weight)


@float32_inside
def _rms_norm(input, normalized_shape, weight, eps):
    _floating_only("rms_norm", input)
    width = _normalized_width("rms_norm", input, normalized_shape, weight=weight)
    two_parts = input.requires_grad and input.device.type == "cpu" and _torch_bits_array(input._array)
    again = (input,) if two_parts else ()  # (RMSNorm's x_again)
    out = RMSNorm.apply(input, weight, *again, eps=eps, width=width)
    # torch's F.rms_norm is composite on the CPU: input * rsqrt(pow(input, 2).mean(dims) + eps), times weight
    scale = ("RsqrtBackward0", ("AddBackward1", ("MeanBackward1", ("PowBackward0", input))))
    graph = (input, scale) if weight is None else (("MulBackward0", input, scale), weight)
    name_node(out, "MulBackward0", input, graph=graph)
    return saves_as_torch(out, input, saved_for(weight, input))  # torch: weight for the input's gradient


@_amp.autocasts
@saving_as_torch("input", "weight", "bias")  # what torch's one node keeps
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """PyTorch's ``F.layer_norm`` over the trailing ``normalized_shape`` dimensions."""
    _check_parameter_dtypes(input, weight, bias)
    out = _layer_norm(input, normalized_shape, weight, bias, eps)
    sixteen_bit = _layer_norm_16bit_kernel_runs(input, weight, bias)
    if sixteen_bit:  # (torch's 16-bit kernel's values and gradients; the composed float32 graph stays for
        width = math.prod(_ints_of_normalized_shape("layer_norm", normalized_shape))  # create_graph)
        with np.errstate(all="ignore"):  # (a 16-bit overflow is silent, as torch's: see float32_inside)
            values, gradients = _layer_norm_16bit_as_torch(input._array, weight, bias, eps, width)
        out = KernelGradients.apply(out, input, weight, bias, values=values, gradients=gradients) \
            if out.requires_grad else KernelValues.apply(out, values=values)
    out = backward_reads(out, input, weight, zeros=False)
    if weight is None or bias is None or sixteen_bit:  # torch's node lists all three, None too (LayerNorm's: the
        name_node(out, "NativeLayerNormBackward0", input, graph=(input, weight, bias))  # tensors)
    return out


@float32_inside
def _layer_norm(input, normalized_shape, weight, bias, eps):
    _floating_only("layer_norm", input)
    width = _normalized_width("layer_norm", input, normalized_shape, weight=weight, bias=bias)
    return LayerNorm.apply(input, weight, bias, eps=eps, width=width)


def rotary_embedding(x, cos, sin):
    """Apply rotary position embedding; ``cos``/``sin`` are arrays or tensors broadcastable to x.

    The tables are constants, so NumPy tables given with a GPU ``x`` are copied to the GPU (CuPy
    refuses to mix the two in one ufunc)."""
    xp = xp_of(x._array)
    tables = [t if isinstance(t, Tensor) and t._device is x._device else xp.asarray(_array(t)) for t in (cos, sin)]
    if tables[0].dtype != x.dtype and promote_types(x.dtype, tables[0].dtype) != x.dtype:  # (autocast's bf16 q)
        return _promoting_rotary(x, *tables)
    return Rotary.apply(x, *tables)  # (tensors where they can be: the node saves them, as torch's)


def _promoting_rotary(x, cos, sin):
    """transformers' ``q * cos + rotate_half(q) * sin`` on a narrower q, op by op as torch runs it: each
    product promotes to the tables' dtype, and the backward rounds each product's gradient to q's dtype
    before adding the two (one fused node would round their float32 sum once)."""
    from .shape import cat  # (ops.shape imports this module's neighbours: at call time)
    cos, sin = (t if isinstance(t, Tensor) else Tensor._make(t, x.device, False, None) for t in (cos, sin))
    half = x.shape[-1] // 2
    return x * cos + cat((-x[..., half:], x[..., :half]), -1) * sin


# torch 2.13's words when enable_gqa=True meets key/value heads that do not divide the query's: cut off mid-sentence
# in torch itself (sdp_utils' check), kept as it is so that the message matches what torch users search for
_GQA_HEADS_MESSAGE = "Number of heads in key and value must divide the number of heads in "


@_amp.autocasts
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *,
                                 scale=None, enable_gqa=False):
    """PyTorch's ``F.scaled_dot_product_attention``: ``softmax(q k^T * scale + mask) v``.

    Inputs ``[..., L, E]``, ``[..., S, E]``, ``[..., S, Ev]`` (4-D ``[B, H, L, E]`` is the fast
    path). ``attn_mask``: boolean (True = the key takes part) or float (added to the scores),
    broadcastable to ``[..., L, S]``. ``is_causal``: query i sees keys ``j <= i`` (aligned top-left,
    as torch; together with ``attn_mask`` only where torch's CPU kernel takes both: 4-D inputs, no
    dropout, a 2-D or 4-D mask, equal batch and head sizes). A KV cache needs the bottom-right
    alignment: pass it as ``attn_mask`` (the Llama model does). ``enable_gqa``: key/value heads
    shared by groups of query heads (``scale`` and ``enable_gqa`` are keyword-only, as torch's).
    ``dropout_p`` drops attention weights (always: the caller passes 0 in eval mode, as with
    torch). bfloat16/float16: computed in float32, rounded once.
    """
    if not query.dtype == key.dtype == value.dtype:  # checked before 16-bit inputs become float32
        raise RuntimeError(f"Expected query, key, and value to have the same dtype, but got query.dtype: "
                           f"{query.dtype} key.dtype: {key.dtype} and value.dtype: {value.dtype} instead.")
    if query.dtype.kind in "biu":  # (torch's math kernel's words; NumPy would fail casting exp's result)
        raise RuntimeError(f"expected scalar type Float but found {torch_name(query.dtype)}")
    refuse_complex("softmax_lastdim_kernel_impl", query)  # (torch's math kernel: a softmax of complex scores)
    mask_dtype = getattr(attn_mask, "dtype", None)
    if mask_dtype is not None and mask_dtype not in (np.bool_, float32, query.dtype):  # (minilora cast it)
        raise RuntimeError(f"Expected attn_mask dtype to be bool or float or to match query dtype, but got "
                           f"attn_mask.dtype: {mask_dtype} and  query.dtype: {query.dtype} instead.")
    # torch's CPU flash kernel (else its math one): no forward-mode formula; on 16-bit inputs its own roundings
    flash = _cpu_flash_takes(query, key, value, dropout_p, attn_mask, enable_gqa)
    if forward_ad_open() and flash:
        no_forward_formula(FLASH_ATTENTION_CPU, query, key, value, attn_mask)
    if attention16.takes(query, key, value) and flash:
        out = _attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, flash16=True)
    else:
        out = _attention_in_float32(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    if flash:  # torch's CPU kernel for this case is one node on the three inputs (float64's too, torch 2.13)
        name_node(out, "ScaledDotProductFlashAttentionForCpuBackward0", query, key, value, graph=(query, key, value))
    return out


FLASH_ATTENTION_CPU = "_scaled_dot_product_flash_attention_for_cpu"  # torch's kernel (it has no forward formula)


def _cpu_flash_takes(query, key, value, dropout_p, attn_mask=None, enable_gqa=False):
    """Does torch's CPU dispatcher pick its flash-attention kernel (over the math one)? 4-D inputs, no dropout,
    rows laid out with stride 1 in their last dimension, no empty sequence, no mask that requires grad (a
    learned bias: the math kernel, even under no_grad), one batch size and head size, and one number of heads
    (with ``enable_gqa`` a multiple of the key/value heads): a batch or heads broadcast, or values of another head
    size, run torch's math kernel (its grad_fn says so)."""
    q, k, v = query._array, key._array, value._array  # (the arrays' own fields: this runs on every call)
    if dropout_p != 0 or q.ndim != 4 or k.ndim != 4 or v.ndim != 4 or query._device.name != "cpu":
        return False
    if attn_mask is not None and getattr(attn_mask, "requires_grad", False):
        return False
    if not (q.shape[0] == k.shape[0] == v.shape[0] and q.shape[3] == k.shape[3] == v.shape[3]
            and k.shape[1] == v.shape[1] and (q.shape[1] == k.shape[1] or enable_gqa and k.shape[1]
                                              and q.shape[1] % k.shape[1] == 0)):
        return False
    return q.shape[2] > 0 and k.shape[2] > 0 and _unit_last_stride(q) and _unit_last_stride(k) and _unit_last_stride(v)


def _unit_last_stride(a):
    return a.shape[-1] <= 1 or a.strides[-1] == a.itemsize


def _attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, flash16=False):
    """The attention after its checks: ``Attention`` (in float32 for 16-bit inputs, torch's math kernel),
    or with ``flash16`` ``attention16.FlashAttention16`` on the 16-bit inputs (a float32 bias)."""
    math_path = not flash16 and _runs_torchs_math(query, key, value, dropout_p, attn_mask, enable_gqa)  # (the caller's ranks)
    if min(query.ndim, key.ndim, value.ndim) < 2:
        raise RuntimeError(f"Expected query, key, and value to all be  at least 2 dimensional, but got query.dim: "
                           f"{query.ndim} key.dim: {key.ndim} and value.dim: {value.ndim} instead.")  # (torch's words)
    if not query.ndim == key.ndim == value.ndim:  # torch's math kernel: its matmuls broadcast the leading
        rank = max(query.ndim, key.ndim, value.ndim)  # dimensions (a [B, L, E] query meets [N, B, S, E] keys)
        query, key, value = (t.reshape((1,) * (rank - t.ndim) + tuple(t.shape)) for t in (query, key, value))
    if not 0.0 <= dropout_p <= 1.0:  # a RuntimeError, as torch's kernels raise
        raise RuntimeError(f"scaled_dot_product_attention: dropout_p must be in [0, 1], got {dropout_p}")
    if query.ndim == 4 and dropout_p == 0 and attn_mask is not None and np.ndim(_array(attn_mask)) < 2:
        # torch's 4-D no-dropout kernel reads the mask's [L, S] dimensions: below 2-D it raises
        raise IndexError(f"scaled_dot_product_attention: Dimension out of range: a {np.ndim(_array(attn_mask))}-D "
                         f"attn_mask has no dimension -2 (4-D inputs need a mask of at least [L, S])")
    if is_causal and attn_mask is not None:
        _check_causal_with_mask(query, key, value, attn_mask, dropout_p, enable_gqa)
    tq, tk = query.shape[-2], key.shape[-2]
    hq, hkv = (query.shape[-3], key.shape[-3]) if query.ndim >= 3 else (1, 1)
    if hq != hkv and not (enable_gqa and hq % hkv == 0) and hkv != 1:
        hint = (f"scaled_dot_product_attention: query has {hq} heads and key/value {hkv} (dimension -3); "
                f"grouped-query attention needs enable_gqa=True and a multiple of the key/value heads")
        words = (_GQA_HEADS_MESSAGE if enable_gqa else torch_broadcast_message([query.shape[:-2], key.shape[:-2]]))
        raise with_note(RuntimeError(words or hint), hint)  # (torch's: its kernels broadcast the heads, and fail)
    if query.shape[-1] != key.shape[-1]:  # (torch's: its q @ k^T, a bmm of the flattened batches)
        count = math.prod(query.shape[:-2])
        raise RuntimeError(_bmm_message((count, tq, query.shape[-1]), (count, key.shape[-1], tk)))
    if key.shape[:-1] != value.shape[:-1]:
        raise RuntimeError(f"scaled_dot_product_attention: key {key.shape} and value {value.shape} must "
                           f"agree in all but the last dimension")
    if query.ndim >= 4 and key.shape[:-3] != query.shape[:-3]:  # batch dimensions broadcast, as torch
        batch = _broadcast_shape(query.shape[:-3], key.shape[:-3])  # (either way: a query batch of 1
        if batch is None:                                             # meets every key batch)
            raise RuntimeError(f"scaled_dot_product_attention: the batch dimensions of key {key.shape} "
                               f"and query {query.shape} do not broadcast together")
        if not math_path:  # (torch's math kernel leaves it to its matmuls: a query's gradient summed, then scaled)
            query, key, value = (t.expand(*batch, *t.shape[-3:]) for t in (query, key, value))
    if math_path:
        return _attention_as_torchs_math(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    bias = _attention_bias(attn_mask, query, tq, tk, is_causal, float32 if flash16 else query.dtype)
    # 3-D inputs: [B, 1, T, E] (each batch element its own block of work), unless dimension 0
    # differs between query and key: then it holds heads (GQA or broadcasting), as torch reads it.
    heads_first = query.ndim == 3 and hq != hkv
    q, k, v = (_as_4d(t, heads_first) for t in (query, key, value))
    bias = _mask_as_4d(bias, query, heads_first)
    if isinstance(attn_mask, Tensor) and attn_mask.requires_grad and is_grad_enabled():
        # a learned bias (ALiBi's slopes, T5's relative positions): the mask enters the scores as a graph input,
        # so that it gets their gradient (summed over the dimensions it was broadcast along), as torch's math kernel
        causal = _mask_as_4d(_attention_bias(None, query, tq, tk, is_causal, query.dtype), query, heads_first)
        learned = _mask_as_4d(attn_mask, query, heads_first)
        out = _attention_with_dropout(q, k, v, causal, scale, dropout_p, learned=learned)
    elif dropout_p > 0:
        out = _attention_with_dropout(q, k, v, bias, scale, dropout_p)
    else:
        kernel = attention16.FlashAttention16 if flash16 else _float_kernel(q, k, v)
        if kernel in (attention32.FlashAttention32, attention16.FlashAttention16) and is_causal:
            # (the kernels fill the causal keys themselves, as torch's: a -inf bias added to a NaN product is NaN)
            mask = _attention_bias(attn_mask, query, tq, tk, False, float32 if flash16 else query.dtype)
            out = kernel.apply(q, k, v, _mask_as_4d(mask, query, heads_first), scale=scale, causal=True)
        else:
            out = kernel.apply(q, k, v, bias, scale=scale)  # torch's CPU math keeps v, for q's and k's gradients
        out = saves_as_torch(out, saved_for(v, q, k))
    return out if query.ndim == 4 else out.reshape(*query.shape[:-1], value.shape[-1])


def _float_kernel(q, k, v):
    """The Function for float32/float64 4-D attention that torch computes with its CPU flash kernel (the math one
    returned earlier): that kernel's steps where they give torch's bits (``attention32.takes``: MKL's products), else
    the fused ``Attention`` -- also where a gradient may be wanted and exercise 2.4 is the learner's (its backward
    runs)."""
    exact = attention32.takes(q, k, v) and (not is_grad_enabled() or _attention_backward_is_the_solution())
    return attention32.FlashAttention32 if exact else Attention


def _runs_torchs_math(query, key, value, dropout_p, attn_mask, enable_gqa=False):
    """Does torch's CPU dispatcher pick its math kernel here (not its flash one), on arrays minilora computes with
    NumPy? Then minilora runs that kernel's ops (``_attention_as_torchs_math``), and gets its bits."""
    return (query._device.name == "cpu" and type(query._array) is np.ndarray
            and not _cpu_flash_takes(query, key, value, dropout_p, attn_mask, enable_gqa))


def _attention_as_torchs_math(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """torch's ``_scaled_dot_product_attention_math`` op by op, so its values and gradients are torch's bits (the
    fused node adds in other orders): q and k^T each scaled by sqrt(scale) before their product (a negative
    scale's sign on q), the mask added, ``_safe_softmax``, dropout, the product with v. Grouped-query heads:
    k and v repeated (``repeat_interleave`` along dim -3), so their gradients sum the group as torch's."""
    from .index import repeat_interleave
    from .reduce import _safe_softmax
    factor = math.sqrt(abs(scale)) if scale is not None else math.sqrt(_default_scale_as_torch(query.shape[-1]))
    if enable_gqa and query.ndim >= 3 and not query.shape[-3] == key.shape[-3] == value.shape[-3]:
        key = repeat_interleave(key, query.shape[-3] // key.shape[-3], -3)
        value = repeat_interleave(value, query.shape[-3] // value.shape[-3], -3)
    q = query * (-factor if scale is not None and scale < 0 else factor)
    scores = q.matmul(key.transpose(-2, -1) * factor)
    mask = _mask_as_torchs_math(attn_mask, query, key, is_causal)
    if mask is not None:
        scores = scores + mask
    weights = _safe_softmax(scores, -1)
    if dropout_p > 0:
        weights = dropout(weights, dropout_p)
    return weights.matmul(value)


def _default_scale_as_torch(head_dim):
    """torch's ``1 / sqrt(E)`` (a double; ``E = 0`` gives inf, which only multiplies empty rows)."""
    return 1 / math.sqrt(head_dim) if head_dim else math.inf


def _mask_as_torchs_math(attn_mask, query, key, is_causal):
    """The mask torch's math kernel adds to the scores: ``is_causal``'s ``ones(L, S).tril()`` or a boolean mask as
    -inf where False and 0 where True (in the query's dtype), a float mask as it is."""
    if is_causal:
        allowed = np.tril(np.ones((query.shape[-2], key.shape[-2]), bool))
    elif getattr(attn_mask, "dtype", None) == np.bool_:  # (a Tensor, or an array ops' callers pass)
        allowed = _array(attn_mask)
    else:
        return attn_mask
    bias = np.where(allowed, query.dtype.type(0), query.dtype.type(-np.inf))
    return Tensor._make(bias, query.device, False, None)


def _check_causal_with_mask(query, key, value, attn_mask, dropout_p, enable_gqa):
    """``is_causal=True`` together with ``attn_mask``: torch 2.13's CPU kernel for 4-D inputs without
    dropout applies both (a key takes part if the mask lets it and it is not in the future); its
    other path (3-D or 5-D inputs, dropout, a 3-D mask, batches or head sizes that differ between
    query, key and value, a query, key or value whose last dimension is not contiguous, a mask that requires
    grad) raises this
    RuntimeError. minilora draws the same line."""
    fused = (query.ndim == key.ndim == value.ndim == 4 and dropout_p == 0
             and all(t.stride(-1) == 1 for t in (query, key, value))
             and np.ndim(_array(attn_mask)) in (2, 4)
             and query.shape[0] == key.shape[0] == value.shape[0]
             and query.shape[-1] == key.shape[-1] == value.shape[-1]
             and (query.shape[1] == key.shape[1] or enable_gqa)
             and not (isinstance(attn_mask, Tensor) and attn_mask.requires_grad and is_grad_enabled()))
    if not fused:
        raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be set when "
                           "is_causal=True (torch applies both only on its 4-D, no-dropout path with "
                           "equal batch and head sizes; put the causal part into the mask)")


_attention_in_float32 = float32_inside(_attention)


def _attention_bias(attn_mask, query, tq, tk, is_causal, dtype):
    """What is added to the scores (an array of ``dtype``, or None): 0 where a key takes part, -inf where
    not; with ``is_causal`` also -inf for the keys after the query's position (top-left aligned)."""
    xp = xp_of(query._array)
    causal = None
    if is_causal and query.is_meta:  # (a meta query's scores have no values: the bias is for their shape only,
        causal = xp.zeros((tq, tk), dtype)  # zeros nobody writes, as minilora/ops/meta.py's results)
    elif is_causal:  # top-left: query i sees keys 0..i
        allowed = np.arange(tk)[None, :] <= np.arange(tq)[:, None]
        causal = xp.asarray(np.where(allowed, 0, -np.inf).astype(dtype))
    if attn_mask is None:
        return causal
    mask = _mask_bias(attn_mask, query, tq, tk, dtype)
    if causal is not None and query.is_meta:  # (no values to add: the sum's shape, unwritten)
        return unwritten_zeros(np.broadcast_shapes(mask.shape, causal.shape), dtype)
    return mask if causal is None else mask + causal


def _mask_bias(attn_mask, query, tq, tk, dtype):
    """``attn_mask`` as a bias of ``dtype`` to add to the scores (a boolean mask: 0 where True, -inf where
    False)."""
    xp = xp_of(query._array)
    mask = xp.asarray(_array(attn_mask))
    if query.is_meta and (mask.dtype == np.bool_ or is_floating(mask.dtype)):  # (shapes only: zeros nobody writes)
        mask = unwritten_zeros(mask.shape, dtype)
    elif mask.dtype == np.bool_:
        mask = xp.where(mask, dtype.type(0), dtype.type(-np.inf))
    elif is_floating(mask.dtype):
        mask = mask.astype(dtype, copy=False)
    else:
        raise RuntimeError(f"scaled_dot_product_attention: expected attn_mask dtype to be bool or float, "
                           f"got {mask.dtype}")
    scores_shape = (*query.shape[:-2], tq, tk)
    if _broadcast_shape(mask.shape, scores_shape) != scores_shape:  # checked here, not deep in NumPy
        hint = (f"scaled_dot_product_attention: attn_mask of shape {tuple(mask.shape)} does not broadcast to the "
                f"attention scores' shape {scores_shape} ([..., L, S])")
        raise with_note(RuntimeError(torch_broadcast_message([scores_shape, tuple(mask.shape)]) or hint), hint)
    return mask


def _broadcast_shape(*shapes):
    """The shape ``shapes`` broadcast to, or None where they do not."""
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        return None


def _broadcast_or_raise(fn, *shapes):
    """The common shape of ``shapes``; where there is none, torch's RuntimeError (a ShapeError, also
    the ValueError NumPy would raise) in torch's words (tensor.torch_broadcast_message)."""
    shape = _broadcast_shape(*shapes)
    if shape is None:
        raise ShapeError(torch_broadcast_message([tuple(s) for s in shapes])
                         or f"{fn}: shapes {', '.join(str(tuple(s)) for s in shapes)} cannot be broadcast together")
    return shape


def _as_4d(t, heads_first=False):
    """``t`` [..., T, E] as [B, H, T, E]: 4-D as it is, 3-D as [B, 1, T, E] (``heads_first``:
    [1, H, T, E]), 2-D as [1, 1, T, E], more dimensions with the leading ones flattened into B."""
    if t.ndim == 4:
        return t
    if t.ndim == 2 or (t.ndim == 3 and heads_first):
        return t.reshape(1, *t.shape) if t.ndim == 3 else t.reshape(1, 1, *t.shape)
    if t.ndim == 3:
        return t.reshape(t.shape[0], 1, *t.shape[1:])
    return t.reshape(math.prod(t.shape[:-3]), *t.shape[-3:])


def _mask_as_4d(bias, query, heads_first):
    """The bias, broadcastable to [B, H, L, S] as ``_as_4d`` lays out the query."""
    if bias is None or query.ndim == 4:
        return bias
    keys = tuple(bias.shape[-1:]) or (1,)  # a 0-d mask covers every key
    shape = tuple(query.shape[:-1]) + keys  # (a learned mask is a Tensor: expanded in the graph)
    full = bias.expand(*shape) if isinstance(bias, Tensor) else xp_of(bias).broadcast_to(bias, shape)
    if query.ndim == 2 or (query.ndim == 3 and heads_first):
        return full.reshape(1, *full.shape) if query.ndim == 3 else full.reshape(1, 1, *full.shape)
    if query.ndim == 3:
        return full.reshape(full.shape[0], 1, *full.shape[1:])
    return full.reshape(math.prod(full.shape[:-3]), *full.shape[-3:])


def _attention_with_dropout(q, k, v, bias, scale, dropout_p, learned=None):
    """Attention whose weights go through dropout, from differentiable ops (the fused node has no
    dropout, nor a gradient for the bias): ``dropout(softmax(q k^T * scale + bias + learned)) v``, ``learned``
    a mask Tensor that requires grad."""
    b, hq, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    scale = _default_scale(d) if scale is None else scale
    group = hq // hkv if hkv else 0
    # query heads sharing a KV head side by side: one product per KV head (no copy of k or v)
    scores = (q.reshape(b, hkv, group * tq, d) @ k.transpose(-1, -2)).reshape(b, hq, tq, tk) * scale
    keep_rows = None
    if bias is not None:
        xp = xp_of(bias)
        empty = (bias == -np.inf).all(axis=-1, keepdims=True)  # rows with no key left give zeros
        if empty.any():
            bias = xp.where(empty, q.dtype.type(0), bias)
            keep_rows = Tensor._make((~empty).astype(q.dtype), q.device, False, None)
        scores = scores + Tensor._make(bias, q.device, False, None)
    if learned is not None:
        scores = scores + learned
    probs = scores.softmax(-1)
    if keep_rows is not None:
        probs = probs * keep_rows
    probs = dropout(probs, dropout_p)
    out = probs.reshape(b, hkv, group * tq, tk) @ v
    return out.reshape(b, hq, tq, v.shape[-1])


def _default_scale(d):
    """``1/sqrt(d)``; for d = 0 the scores are empty sums, 0 at any scale (torch's 1/sqrt(0) = inf
    gives the same attention: the mean of the values), so 1 (0 * inf would be nan)."""
    return 1 / math.sqrt(d) if d else 1.0


class Pad(Function):
    """Constant padding (negative amounts crop), as ``F.pad(mode='constant')``; backward crops the
    gradient back to the input's region."""
    torch_layout = "suggested"  # (torch's constant_pad_nd: a result in the input's suggested memory format)

    @staticmethod
    def forward(ctx, a, widths, value):
        xp = xp_of(a)
        shape = tuple(n + before + after for n, (before, after) in zip(a.shape, widths))
        if any(n + min(before, 0) < 0 or n + min(before, 0) + min(after, 0) < 0 for n, (before, after) in
               zip(a.shape, widths)):  # torch crops one side, then the other: neither may cut past the edge
            raise RuntimeError(f"narrow(): length must be non-negative. (pad: cropping {widths} from an input of "
                               f"shape {a.shape})")
        if any(n < 0 for n in shape):
            raise RuntimeError(f"pad: the padded shape {shape} of input {a.shape} has a negative size")
        out = xp.full(shape, value, dtype=a.dtype)
        ctx.src, ctx.dst = _pad_regions(a.shape, widths)
        out[ctx.dst] = a[ctx.src]
        ctx.shape = a.shape
        return out

    @staticmethod
    def backward(ctx, g):
        grad = xp_of(g).zeros(ctx.shape, dtype=g.dtype)
        grad[ctx.src] = g[ctx.dst]
        return grad


def _pad_regions(shape, widths):
    """The slices of the input that survive and where they land in the output."""
    src, dst = [], []
    for n, (before, after) in zip(shape, widths):
        start, stop = max(-before, 0), n - max(-after, 0)
        src.append(slice(start, max(stop, start)))
        dst.append(slice(max(before, 0), max(before, 0) + max(stop - start, 0)))
    return tuple(src), tuple(dst)


def _padding_kernel(input, pad, mode="constant", value=None):
    """torch's kernel for ``F.pad``'s mode and padded dims, under which autocast lists it (amp.py)."""
    kernel = {"reflect": "reflection_pad", "replicate": "replication_pad"}.get(mode)
    return kernel and f"{kernel}{len(pad) // 2}d"


@_amp.autocasts(name_of=_padding_kernel)
def pad(input, pad, mode="constant", value=None):
    """PyTorch's ``F.pad``: ``pad`` lists (before, after) amounts from the LAST dimension backwards,
    ``(left, right, top, bottom, ...)``; negative amounts crop. ``mode`` is 'constant' (``value``,
    default 0), 'reflect' (mirrored about the edge element: ``[2, 1 | 0, 1, 2 | 1, 0]``),
    'replicate' (the edge element repeated) or 'circular' (wrapped around)."""
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise NotImplementedError(f"Unrecognised padding mode {mode} (choose 'constant', 'reflect', "
                                  f"'replicate' or 'circular')")
    pad = tuple(int(p) for p in int_arguments("pad", "pad", pad))
    if len(pad) % 2:  # RuntimeErrors with torch's words, as torch
        raise RuntimeError("Padding length must be divisible by 2")
    if len(pad) // 2 > input.ndim:
        raise RuntimeError(f"Padding length should be less than or equal to two times the input dimension "
                           f"but got padding length {len(pad)} and input of dimension {input.ndim}")
    if mode != "constant":
        if value is not None and value != 0:
            raise RuntimeError(f"Padding mode \"{mode}\" doesn't take in value argument")
        _check_padded_dims(input, pad, mode)
        width = input.shape[-1] + pad[0] + pad[1]  # (torch's 1-D reflection/replication kernels check this)
        if mode != "circular" and len(pad) == 2 and input.ndim in (2, 3) and width < 1:
            raise RuntimeError(f"input (W: {input.shape[-1]}) is too small. Calculated output W: {width}")
        out = _pad_by_index(input, pad, mode)  # torch's reflection/replication pads keep the input
        if mode != "circular" and input.dtype == np.bool_:  # (after the sizes' checks, as torch's kernels)
            kernel = {"reflect": "reflection_pad", "replicate": "replication_pad"}[mode]
            raise NotImplementedError(f'"{kernel}{len(pad) // 2}d" not implemented for \'Bool\'')
        if mode != "circular" and type(input._array) is np.ndarray and is_floating(input.dtype) \
                and not input.is_meta:  # (meta: no values to copy, no kernel to stand for)
            out = KernelGradients.apply(out, input, None, None, values=out._array.copy(order="K"),
                                        gradients=_pad_gradients(input, pad, mode))
        # (from a channels_last input: torch's reflection/replication kernels' result is channels_last, its
        # circular pad's cat contiguous; their meta kernels' result is contiguous)
        out = composed_layout(out, input, "contiguous" if mode == "circular" or input.is_meta else "suggested")
        if mode == "circular":  # (torch composes it of copies into slices: no node of its own)
            return name_node(out, "torch::autograd::CopySlices", graph=_circular_pad_graph(input, pad))
        kernel = {"reflect": "ReflectionPad", "replicate": "ReplicationPad"}[mode]
        out = backward_reads(saves_as_torch(out, input), input)  # (torch's reflection_pad1d_backward(grad, self))
        return name_node(out, f"{kernel}{len(pad) // 2}DBackward0", input, graph=(input,))
    widths = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):  # pairs from the last dimension backwards
        widths[input.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    if value is not None:  # torch's value is a float, which must fit the dtype (uint8: -1 and 300 raise)
        value = checked_number(float(python_number(value)), input.dtype)
    out = Pad.apply(input, widths=tuple(widths), value=0 if value is None else value)
    return name_node(out, "ConstantPadNdBackward0", input)


_PADDED_RANKS = {2: (2, 3), 4: (3, 4), 6: (4, 5)}  # torch's: (un)batched 1-D, 2-D and 3-D padding


def _pad_gradients(input, pad, mode):
    """ATen's reflection/replication pad backward as a function of (g, needs) for ``KernelGradients``: each
    output element's gradient added into the input element it was read from, the output in row-major order (its
    loops over each plane's positions). The composed gather's backward added one padded dimension's copies at a
    time, another order of additions: an ulp or more off where an element is read three times or more. A 16-bit
    gradient adds in its dtype, each addition rounded (torch's scalar_t ``+=``; NumPy's ``add.at`` on it too)."""
    from ..tensor import no_grad
    with no_grad():
        positions = Tensor(np.arange(input._array.size, dtype=np.int64).reshape(input.shape), dtype=np.int64,
                           device="cpu")
        read_from = _pad_by_index(positions, pad, mode)._array.reshape(-1)

    def gradients(g, needs):
        if not needs[0]:
            return None, None, None
        grad = np.zeros(input._array.size, g.dtype)
        np.add.at(grad, read_from, np.ascontiguousarray(g).reshape(-1))  # (in order, one addition at a time)
        return grad.reshape(input.shape), None, None
    return gradients


def _circular_pad_graph(input, pad):
    """The edges of torch's circular pad's node (ATen's _pad_circular): the input, sliced along each padded
    dimension, copied into a new tensor (a CopySlices of no node), then one copy per positive amount from a
    slice of the tensor itself (a CopySlices of the last one and a SliceBackward0 of it)."""
    source = input
    for _ in range(len(pad) // 2):
        source = ("SliceBackward0", source)
    node = ("torch::autograd::CopySlices", None, source)
    for amount in pad:  # (left then right of the last dimension, then the one before it, ...)
        if amount > 0:
            node = ("torch::autograd::CopySlices", node, ("SliceBackward0", node))
    return node[1:]


def _check_padded_dims(input, pad, mode):
    """torch's reflection / replication kernels: an empty batch is fine, any other empty dim is not."""
    ranks = _PADDED_RANKS.get(len(pad), ())
    if mode == "circular" or input.ndim not in ranks:
        return
    if 0 in (input.shape[1:] if input.ndim == ranks[1] else input.shape):
        raise RuntimeError(f"Expected {ranks[0]}D or {ranks[1]}D (batch mode) tensor with possibly 0 batch size and "
                           f"other non-zero dimensions for input, but got: {list(input.shape)}")


def _pad_by_index(input, pad, mode):
    """Non-constant padding as a gather: each padded dimension is read at the positions its mode
    gives (``index_select``, whose backward adds up the gradient of every copy, as torch's).
    Negative amounts crop first (reflect and replicate: read about the uncropped edges); the modes then pad
    the cropped tensor (torch's order)."""
    from .index import index_select
    if input.ndim not in _PADDED_RANKS.get(len(pad), ()):
        raise NotImplementedError(f"Padding size {len(pad)} is not supported for {input.ndim}D input "
                                  f"tensor. Supported combinations for non-constant padding: 2D or 3D "
                                  f"input with padding size 2, 3D or 4D with 4, 4D or 5D with 6")
    if mode in ("reflect", "replicate"):
        _output_not_empty(input.shape[input.ndim - len(pad) // 2:], pad, mode)
    for i in range(len(pad) // 2):
        dim, before, after = input.ndim - 1 - i, pad[2 * i], pad[2 * i + 1]
        size = input.shape[dim]
        if mode in ("reflect", "replicate"):  # torch mirrors / clamps about the edges of the uncropped
            # input (its checks too): pad(x, (-1, 2), 'reflect') of [0, 1, 2] is [1, 2, 1, 0], and
            # pad(x, (-3, 2), 'replicate') of [0, 1, 2] is [2, 2]
            if mode == "reflect" and max(before, after) >= size:
                raise RuntimeError(f"Argument #4: Padding size should be less than the corresponding input dimension, "
                                   f"but got: padding ({before}, {after}) at dimension {dim} of input "
                                   f"{list(input.shape)}")
            positions = _padded_positions(mode, size, before, after)
            input = index_select(input, dim, Tensor(positions, dtype=np.int64, device=input.device))
            continue
        input = input.narrow(dim, max(-before, 0), size - max(-before, 0) - max(-after, 0))
        before, after, size = max(before, 0), max(after, 0), input.shape[dim]
        if mode == "circular" and max(before, after) > size:
            raise RuntimeError("Padding value causes wrapping around more than once.")
        positions = _padded_positions(mode, size, before, after)
        input = index_select(input, dim, Tensor(positions, dtype=np.int64, device=input.device))
    return input


def _output_not_empty(sizes, pad, mode):
    """torch's reflect and replicate padding refuse an output empty in every padded dimension (one empty one is
    allowed: the kernels' check is ``output_w >= 1 || output_h >= 1``), in their kernels' words."""
    outputs = [size + pad[2 * i] + pad[2 * i + 1] for i, size in enumerate(reversed(sizes))][::-1]
    if max(outputs) >= 1:
        return
    sizes = list(sizes)
    if len(sizes) == 1:
        raise RuntimeError(f"input (W: {sizes[0]}) is too small. Calculated output W: {outputs[0]}")
    if len(sizes) == 2:
        space = " " if mode == "replicate" else ""  # (the 2-D kernels' words differ by a space)
        raise RuntimeError(f"input (H: {sizes[0]}, W: {sizes[1]}{space}) is too small. Calculated output H: "
                           f"{outputs[0]} W: {outputs[1]}")
    raise RuntimeError(f"input (D: {sizes[0]} H: {sizes[1]}, W: {sizes[2]}) is too small. Calculated output D: "
                       f"{outputs[0]} H: {outputs[1]} W: {outputs[2]}")


def _padded_positions(mode, size, before, after):
    """Where each element of a padded dimension reads from, for ``before`` + ``size`` + ``after``."""
    p = np.arange(-before, size + after)
    if mode == "reflect":
        p = np.abs(p)
        return np.where(p >= size, 2 * (size - 1) - p, p)
    if mode == "replicate":
        return np.clip(p, 0, size - 1)
    return p % size  # circular


def one_hot(input, num_classes=-1):
    """PyTorch's ``F.one_hot``: int64 ``[*, num_classes]`` with a 1 at each index (no gradient).

    The first argument is ``input``, as torch 2.13 takes it by keyword (its docstring says ``tensor``)."""
    int_argument("one_hot", "num_classes", num_classes)
    ids = _array(input)
    xp = xp_of(ids)
    if getattr(ids, "dtype", None) is None or ids.dtype.kind not in "iu":
        raise RuntimeError("one_hot is only applicable to index tensor (an integer tensor)")
    if isinstance(input, Tensor) and input.is_meta and num_classes != -1:  # (no values to check or compare)
        return Tensor._make(xp.zeros(ids.shape + (num_classes,), np.int64), input.device, False, None)
    if ids.size and ids.min() < 0:
        raise RuntimeError("one_hot: class values must be non-negative")
    if num_classes == -1:
        if isinstance(input, Tensor) and input.is_meta:  # (torch reads the largest id with .item(): no value)
            raise RuntimeError("Tensor.item() cannot be called on meta tensors")
        if not ids.size:  # nothing to read the number of classes from
            raise RuntimeError("Can not infer total number of classes from empty tensor.")
        num_classes = int(ids.max()) + 1
    if ids.size and ids.max() >= num_classes:
        raise RuntimeError("Class values must be smaller than num_classes.")
    out = (ids[..., None] == xp.arange(num_classes)).astype(np.int64)
    return Tensor._make(out, input.device, False, None) if isinstance(input, Tensor) else Tensor(out)


# ---- more of torch.nn.functional: smooth L1 / Huber, KL divergence, normalize, cosine similarity ----
def _broadcast_target(fn, input, target):
    """Both broadcast to one shape, with torch's warning when the sizes differ (usually a bug: a model's
    [N, 1] output against [N] targets is an N x N loss)."""
    if tuple(target.shape) != tuple(input.shape):
        warn_at_caller(f"Using a target size ({torch_spelling(target.shape)}) that is different to the input size "
                       f"({torch_spelling(input.shape)}). This will likely lead to incorrect results due to broadcasting. "
                       f"Please ensure they have the same size.")
        shape = _broadcast_or_raise(fn, tuple(input.shape), tuple(target.shape))
        input, target = input.expand(shape), target.expand(shape)
    return input, target


def _quadratic_then_linear(diff, knee):
    """``0.5 d^2`` for ``|d| < knee``, ``knee (|d| - 0.5 knee)`` beyond: the Huber function."""
    from .elementwise import where
    size = diff.abs()
    outside = size >= knee  # (a nan is inside: its loss and gradient are nan, as torch's kernel gives)
    inner = where(outside, 0, diff)  # (not diff: 0.5 inf^2's gradient, unselected, would be 0 * inf = nan)
    return where(outside, knee * (size - 0.5 * knee), 0.5 * inner * inner)


@_amp.autocasts
@float32_inside(promote=True)
@saving_as_torch("input", "target")  # what torch's one node keeps
def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """PyTorch's ``F.smooth_l1_loss``: ``0.5 d^2 / beta`` where ``|d| < beta``, ``|d| - 0.5 beta``
    elsewhere (``d = input - target``); ``beta=0`` is the L1 loss."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    _floating_result("smooth_l1_loss", input, target)
    inputs = (input, target)
    input, target = _broadcast_target("smooth_l1_loss", input, target)
    if beta > 0 and isinstance(target, Tensor) and target.dtype == input.dtype:
        _check_reduction("smooth_l1_loss", reduction)
        loss = SmoothL1Loss.apply(input, target, beta=float(beta), reduction=reduction)
        return name_node(loss, "SmoothL1LossBackward0", *inputs, graph=inputs)
    diff = input - target
    loss = diff.abs() if beta == 0 else _quadratic_then_linear(diff, beta) / beta
    return name_node(_reduced("smooth_l1_loss", loss, reduction), "SmoothL1LossBackward0", *inputs, graph=inputs)


class SmoothL1Loss(Function):
    """torch's smooth_l1_loss kernels, reduction included: ``z = |x - t|``, ``z - 0.5 beta`` where ``z >= beta``,
    ``0.5 z z / beta`` elsewhere, then summed or averaged (torch's sum); the backward
    ``smooth_l1_loss_backward``: ``norm * o * g`` with ``norm`` 1/n for a mean (else 1) and ``o`` the sign of ``d``
    where ``|d| >= beta``, ``d / beta`` elsewhere; the target's is the same kernel with the two swapped (``d = t - x``,
    so a zero difference gives the target ``0 * g``'s sign, not its negation); its scalar tail divides by the float64
    beta."""
    torch_layout = "contiguous"

    @staticmethod
    def forward(ctx, x, t, *, beta, reduction):
        xp, real = xp_of(x), x.dtype.type
        ctx.x, ctx.t, ctx.beta, ctx.reduction = x, t, beta, reduction
        z = xp.abs(x - t)
        with np.errstate(all="ignore"):
            loss = xp.where(z >= real(beta), z - real(0.5) * real(beta), real(0.5) * z * z / real(beta))
        return _reduced_in_kernel(loss, reduction, xp)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.x, ctx.t
        real = x.dtype.type
        norm = real(1 / x.size) if ctx.reduction == "mean" and x.size else real(1)
        grads = [None, None]
        for i, (a, b) in enumerate(((x, t), (t, x))):
            if ctx.needs_input_grad[i]:
                d = a - b
                grads[i] = _smooth_l1_slope(d, real(ctx.beta), norm) * g
                _in_scalar_tail(grads[i], (x, t), lambda where, d=d: ((norm * d.reshape(-1)[where]) * (
                                g if g.ndim == 0 else g.reshape(-1)[where])).astype(np.float64) / ctx.beta,
                                inside=lambda where, d=d: xp_of(d).abs(d.reshape(-1)[where]) < real(ctx.beta))
        return tuple(grads)


class MseLoss(Function):
    """float32/float64 ``(x - t)^2`` reduced (torch's sum), with torch's backward kernel: ``norm (x - t) g``, ``norm``
    2/n (rounded to the dtype) for a mean, else 2; the target's from the swapped difference, ``norm (t - x) g``.
    bfloat16/float16: the same steps, each rounded to the dtype (torch's ``Vectorized`` 16-bit ops; composed, the
    mean's ``g / n`` then ``2 d`` put ~half the gradients a step off)."""
    torch_layout = "elementwise"  # (reduction='none': torch's TensorIterator result, a channels_last input's layout)

    @staticmethod
    def forward(ctx, x, t, *, reduction):
        ctx.x, ctx.t, ctx.reduction = x, t, reduction
        d = x - t
        loss = d * d
        return _reduced_in_kernel(loss, reduction, np)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.x, ctx.t
        norm = x.dtype.type(2 / x.size if ctx.reduction == "mean" and x.size else 2)
        return tuple(norm * (a - b) * g if ctx.needs_input_grad[i] else None
                     for i, (a, b) in enumerate(((x, t), (t, x))))


def _smooth_l1_slope(d, beta, norm):
    """``norm * o`` of smooth_l1_loss_backward's vector loop: ``o`` is +-1 where ``|d| >= beta``, ``d / beta`` elsewhere."""
    xp, one = xp_of(d), d.dtype.type(1)
    with np.errstate(all="ignore"):
        return norm * xp.where(xp.abs(d) >= beta, xp.where(d > 0, one, -one), d / beta)


def _in_scalar_tail(out, operands, scalar, inside):
    """Where torch's ``cpu_kernel_vec`` runs its scalar lambda over ``operands`` (a float32/float64 NumPy ``out``,
    C-contiguous, of their shape: ``float32_math.scalar_positions``), ``out`` takes ``scalar(where)`` (rounded to its
    dtype) at the elements for which ``inside(where)`` holds (the branch whose scalar formula rounds otherwise than the
    vector one). The loss kernels have an AVX2 build only: two vectors of 32 bytes a step on every capability."""
    if type(out) is not np.ndarray or out.dtype not in _SUMMED or not out.size:
        return
    step = 64 // out.itemsize
    flat = out.reshape(-1)
    for where in float32_math.scalar_positions(*operands, step=step):
        chosen = inside(where)
        with np.errstate(all="ignore"):
            flat[where] = np.where(chosen, scalar(where).astype(out.dtype), flat[where])


@_amp.autocasts
@saving_as_torch("input", "target")  # what torch's one node keeps
def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """PyTorch's ``F.huber_loss`` (see _huber), one node as torch's."""
    graph = (input, target) if weight is None else (input, target, weight)
    return _reduced("huber_loss", _huber(input, target, reduction, delta, weight), "none", graph=graph)


def _huber(input, target, reduction="mean", delta=1.0, weight=None):
    """PyTorch's ``F.huber_loss``: ``0.5 d^2`` where ``|d| < delta``, ``delta (|d| - 0.5 delta)``
    elsewhere -- ``delta`` times ``smooth_l1_loss`` with ``beta = delta``. A ``weight`` multiplies
    each element's loss; 'mean' is then the plain mean (torch's rule here, unlike ``mse_loss``).

    16-bit floats as torch's CPU kernels: float16 in float32, rounded once; bfloat16 rounded to
    bfloat16 after every step (``BFloat16Huber``)."""
    if delta <= 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    _floating_result("huber_loss", input, target)
    if isinstance(target, Tensor) and target.dtype != input.dtype and weight is None:
        # torch's kernel: each element computed in the promoted dtype, written in the input's dtype
        wide = result_type(input, target)
        per_element = huber_loss(input.to(wide), target.to(wide), "none", delta).to(input.dtype)
        return _reduced("huber_loss", per_element, reduction)
    if _bfloat16_on_cpu(input, target):
        input, target = _broadcast_target("huber_loss", input, target)
        if weight is None:
            _check_reduction("huber_loss", reduction)
            return BFloat16Huber.apply(input, target, delta=delta, reduction=reduction)
        loss = BFloat16Huber.apply(input, target, delta=delta, reduction="none")
        return _weighted_huber(loss, input, weight, reduction)
    return _huber_loss(input, target, reduction, delta, weight)


def _bfloat16_on_cpu(*tensors):
    return all(isinstance(t, Tensor) and t.dtype.itemsize == 2 and is_floating(t.dtype) and
               t.dtype != np.float16 and xp_of(t._array) is np for t in tensors)


class BFloat16Huber(Function):
    """torch's bfloat16 CPU huber kernel: ``z = |x - y|``, then ``(0.5 z) z`` or ``delta (z - 0.5 delta)``,
    every step rounded to bfloat16 (NumPy's bfloat16 ufuncs round each result the same way), reduced
    in float32. Backward: ``(norm * clamp(x - y, -delta, delta)) * grad`` (norm: 1, or 1/N for
    'mean', in bfloat16), and minus that for the target.

    That is torch's vectorised loop. Its scalar loop, which takes the last ``n mod 32`` elements
    (AVX2), rounds a little differently: those few elements may differ by one bfloat16 step."""

    @staticmethod
    def forward(ctx, x, y, delta, reduction):
        bf16 = x.dtype.type
        d, half = bf16(delta), bf16(0.5)
        diff = x - y
        z = np.abs(diff)
        loss = np.where(z < d, (half * z) * z, d * (z - half * d))
        ctx.diff, ctx.delta, ctx.reduction, ctx.count = diff, d, reduction, loss.size
        if reduction == "none":
            return loss
        if reduction == "sum" or loss.size == 0:  # (an empty batch's mean: torch's 0 / 0 = nan, no NumPy warning)
            total = loss.sum(dtype=np.float32) / (np.float32(1) if reduction == "sum" else np.float32(np.nan))
        else:
            total = loss.mean(dtype=np.float32)
        return np.asarray(total).astype(x.dtype)

    @staticmethod
    def backward(ctx, g):
        bf16 = ctx.diff.dtype.type
        # (an empty batch's 1 / 0 is torch's inf, times no element: its gradient is empty either way)
        norm = bf16(1.0 / ctx.count if ctx.count else np.inf) if ctx.reduction == "mean" else bf16(1.0)
        d = ctx.delta  # (np.clip would leave bfloat16 for float32)
        clamped = np.where(ctx.diff <= -d, -d, np.where(ctx.diff >= d, d, ctx.diff)).astype(ctx.diff.dtype)
        grad = (norm * clamped) * g
        return grad, -grad


@float32_inside(promote=True)
def _huber_loss(input, target, reduction, delta, weight):
    input, target = _broadcast_target("huber_loss", input, target)
    if weight is None and isinstance(target, Tensor) and target.dtype == input.dtype:
        _check_reduction("huber_loss", reduction)
        return HuberLoss.apply(input, target, delta=float(delta), reduction=reduction)
    loss = _quadratic_then_linear(input - target, delta)
    return _weighted_huber(loss, input, weight, reduction)


class HuberLoss(Function):
    """torch's huber_loss kernels, reduction included: ``z = |x - t|``, ``(0.5 z) z`` where ``z < delta``, ``delta (z -
    0.5 delta)`` elsewhere, summed or averaged as torch's sum; the backward ``huber_loss_backward``: ``norm d g``
    inside, ``+-norm delta g`` outside (its scalar tail: ``+-norm g`` times the float64 delta, then rounded), the
    target's the same kernel with the two swapped (``d = t - x``)."""
    torch_layout = "contiguous"

    @staticmethod
    def forward(ctx, x, t, *, delta, reduction):
        xp, real = xp_of(x), x.dtype.type
        ctx.x, ctx.t, ctx.delta, ctx.reduction = x, t, delta, reduction
        z = xp.abs(x - t)
        with np.errstate(all="ignore"):
            loss = xp.where(z >= real(delta), real(delta) * (z - real(0.5) * real(delta)), real(0.5) * z * z)
        return _reduced_in_kernel(loss, reduction, xp)

    @staticmethod
    def backward(ctx, g):
        x, t, delta = ctx.x, ctx.t, ctx.delta
        xp, real = xp_of(g), x.dtype.type
        norm = real(1 / x.size) if ctx.reduction == "mean" and x.size else real(1)
        grads = [None, None]
        for i, (a, b) in enumerate(((x, t), (t, x))):
            if ctx.needs_input_grad[i]:
                d = a - b
                with np.errstate(all="ignore"):  # (its vector loop: norm * clamp(d, -delta, delta) * g)
                    grads[i] = norm * xp.clip(d, -real(delta), real(delta)) * g

                def scalar(where, d=d):
                    part = d.reshape(-1)[where]
                    gg = g if g.ndim == 0 else g.reshape(-1)[where]
                    wide = (norm * gg).astype(np.float64) * delta
                    return xp.where(part <= -real(delta), -wide, wide)
                _in_scalar_tail(grads[i], (x, t), scalar,
                                inside=lambda where, d=d: xp.abs(d.reshape(-1)[where]) >= real(delta))
        return tuple(grads)


def _weighted_huber(loss, input, weight, reduction):
    if weight is not None:
        if tuple(weight.shape) != tuple(input.shape):
            raise ValueError("Weights and input must have the same size.")
        loss = loss * weight
    return _reduced("huber_loss", loss, reduction)


@_amp.autocasts
def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """PyTorch's ``F.kl_div``: ``input`` holds log-probabilities, ``target`` probabilities (or
    log-probabilities with ``log_target=True``); pointwise ``target (log target - input)``, with
    ``0 log 0 = 0``. 'batchmean' divides the sum by the batch size (the true KL divergence per
    sample); 'mean' divides by every element, with torch's warning saying so."""
    from .elementwise import xlogy
    if any(isinstance(t, Tensor) and t.dtype.kind == "c" for t in (input, target)):
        raise RuntimeError("kl_div: Complex inputs not supported.")
    if any(isinstance(t, Tensor) and not is_floating(t.dtype) for t in (input, target)):
        raise RuntimeError(f"kl_div: Integral inputs not supported (got {input.dtype} and {target.dtype})")
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce, reduction)
    elif reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the "
                      "support size.'batchmean' divides only by the batch size, and aligns with "
                      "the KL div math definition.'mean' will be changed to behave the same as "
                      "'batchmean' in the next major release.", UserWarning, stacklevel=2)
    if reduction not in ("mean", "sum", "none", "batchmean"):
        raise ValueError(f"kl_div: {reduction!r} is not a valid value for reduction (choose "
                         f"'mean', 'batchmean', 'sum' or 'none')")
    if log_target:
        loss = target.exp() * (target - input)
    else:
        # ATen's `xlogy(target, target) - target * input`, its operands made right to left (as GCC builds torch):
        # the product's node first, so the engine runs xlogy's first and target's gradient sums in torch's order
        product = target * input
        loss = xlogy(target, target) - product
    if reduction == "batchmean":
        total = loss.sum()
        return total / input.shape[0] if input.ndim else total
    return _reduced("kl_div", loss, reduction)


def normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
    """PyTorch's ``F.normalize``: ``input / max(||input||_p, eps)`` along ``dim``."""
    if out is not None:
        raise NotImplementedError("normalize: out= is not supported by minilora (use the result)")
    denom = input.norm(p, dim, keepdim=True).clamp_min(eps)
    return input / denom.expand(input.shape)


def _clamped_norm(x, dim, eps):
    """``max(||x||, eps)`` along ``dim`` (kept), with the gradient of ``||x||`` itself: torch clamps
    the norm in place under ``no_grad``, so its autograd never sees the clamp. We add the clamp's
    change as a constant to the same effect."""
    norm = x.norm(2, dim, keepdim=True)
    with no_grad():  # (eps - norm where the clamp acts, else 0: clamp_min(eps) - norm is inf - inf = NaN at inf)
        lift = (eps - norm).clamp_min(0)
    return norm + lift


@_amp.autocasts
@saving_as_torch("x1", "x2")  # what torch's one node keeps
def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """PyTorch's ``F.cosine_similarity``: ``sum(x1/||x1|| * x2/||x2||)`` along ``dim``, each norm
    at least ``eps``, with ``x1`` and ``x2`` broadcast together -- computed as torch does
    (normalise first, then multiply), so the result stays within [-1, 1]."""
    from ..dtypes import result_type
    dtype = result_type(x1, x2)
    if not is_floating(dtype):
        raise RuntimeError(f"cosine_similarity requires floating point inputs, got {dtype}")
    shape = _broadcast_or_raise("cosine_similarity", tuple(x1.shape), tuple(x2.shape))
    x1, x2 = (x.to(dtype).expand(shape) for x in (x1, x2))
    return ((x1 / _clamped_norm(x1, dim, eps)) * (x2 / _clamped_norm(x2, dim, eps))).sum(dim)


# ---- distances and the margin losses built on them ------------------------------------------------
class Cdist(Function):
    """``torch.cdist``'s p-norm distance between each row of ``x1`` and each row of ``x2`` (ATen's
    ``_cdist_forward``: the norm of each difference, batch dimensions broadcast), with its own backward,
    ``_cdist_backward``, which is not vector_norm's: p = 0 gives zeros (a norm's gradient is none), p = inf gives
    the whole gradient to each tied largest |difference| (a norm shares it), p < 1 is 0 where a difference is.
    torch has no derivative of that backward (ops/higher_order.py refuses a second one in its words)."""

    @staticmethod
    def forward(ctx, x1, x2, p):
        from ..linalg import VectorNorm  # (the norms themselves: linalg.vector_norm's, the same numbers)
        diff = x1[..., :, None, :] - x2[..., None, :, :]
        ctx.shapes, ctx.p, ctx.diff = (x1.shape, x2.shape), p, diff
        norms = VectorNorm.forward(types.SimpleNamespace(), upcast(diff), ord=p, dims=(diff.ndim - 1,), keepdim=False)
        ctx.out = norms.astype(diff.dtype, copy=False)  # (16-bit: the norms in float32, rounded once, as vector_norm)
        if p == 0:
            ctx.out = nan_where_a_difference_is(diff, ctx.out)
        return ctx.out

    @staticmethod
    def backward(ctx, g):
        from .elementwise import unbroadcast  # (ops.elementwise imports this module's neighbours: at call time)
        g, dist = g[..., None], ctx.out[..., None]
        need1, need2 = ctx.needs_input_grad[:2]  # (x2's as torch: the same formula on x2 - x1, so its zeros are +0)
        return (unbroadcast(_cdist_grad(ctx.diff, g, dist, ctx.p).sum(-2), ctx.shapes[0]) if need1 else None,
                unbroadcast(_cdist_grad(-ctx.diff, g, dist, ctx.p).sum(-3), ctx.shapes[1]) if need2 else None)


def nan_where_a_difference_is(diff, counts):
    """cdist's and pdist's p = 0 as torch's kernel: it sums ``min(ceil(|d|), 1)`` over each difference of rows, so a
    NaN difference makes the distance NaN (vector_norm's count of nonzeros counts it as 1)."""
    xp = xp_of(diff)
    return xp.where(xp.isnan(diff).any(-1), counts.dtype.type(np.nan), counts)


def _cdist_grad(diff, g, dist, p):
    """ATen's _cdist_backward for each difference of rows (before the sum over the other side's rows)."""
    xp = xp_of(g)
    with np.errstate(all="ignore"):  # (0 / 0 and 0 ** negative where torch's masks take over)
        if p == 0:
            grad = xp.zeros_like(diff)
        elif p == 1:
            grad = xp.sign(diff) * g
        elif p == math.inf:
            grad = xp.sign(diff) * g * (xp.abs(diff) == dist)
        elif p == 2:
            grad = xp.where(dist == 0, 0, g * diff / dist)
        elif p < 2:
            powered = xp.sign(diff) * xp.abs(diff) ** (p - 1) * g / dist ** (p - 1)
            grad = xp.where((dist == 0) | ((diff == 0) & (p < 1)), 0, powered)
        else:
            grad = xp.where(dist == 0, 0, diff * xp.abs(diff) ** (p - 2) * g / dist ** (p - 1))
    return grad.astype(g.dtype, copy=False)


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """PyTorch's ``F.pairwise_distance``: ``||x1 - x2 + eps||_p`` over the last dimension (``eps``
    added to the difference, as torch does, so that equal rows have a gradient)."""
    last = max(x1.ndim, x2.ndim) - 1
    return (x1 - x2 + eps).norm(p, max(last, 0), keepdim)


@_amp.autocasts
def margin_ranking_loss(input1, input2, target, margin=0, size_average=None, reduce=None,
                        reduction="mean"):
    """PyTorch's ``F.margin_ranking_loss``: ``max(0, -target (input1 - input2) + margin)``, with
    ``target`` +1 where ``input1`` should rank higher and -1 where ``input2`` should."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if not input1.ndim == input2.ndim == target.ndim:
        raise RuntimeError(f"margin_ranking_loss : All input tensors should have same dimension but "
                           f"got sizes: input1: {tuple(input1.shape)}, input2: {tuple(input2.shape)}, "
                           f"target: {tuple(target.shape)} ")
    from .elementwise import aten_scalar  # (ops.elementwise imports this module's neighbours: at call time)
    product = -target * (input1 - input2)
    return _reduced("margin_ranking_loss", aten_scalar(product + margin, product).clamp_min(0), reduction)


@_amp.autocasts
def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False,
                        size_average=None, reduce=None, reduction="mean"):
    """PyTorch's ``F.triplet_margin_loss``: ``max(d(a, p) - d(a, n) + margin, 0)`` with ``d`` the
    ``pairwise_distance``; ``swap=True`` takes the smaller of ``d(a, n)`` and ``d(p, n)``."""
    from .elementwise import minimum
    reduction = legacy_reduction(size_average, reduce, reduction)
    if not anchor.ndim == positive.ndim == negative.ndim:
        raise RuntimeError(f"The anchor, positive, and negative tensors are expected to have the same "
                           f"number of dimensions, but got: anchor {anchor.ndim}D, positive "
                           f"{positive.ndim}D, and negative {negative.ndim}D inputs")
    to_positive = pairwise_distance(anchor, positive, p, eps)
    to_negative = pairwise_distance(anchor, negative, p, eps)
    if swap:
        to_negative = minimum(to_negative, pairwise_distance(positive, negative, p, eps))
    return _reduced("triplet_margin_loss", (margin + to_positive - to_negative).clamp_min(0), reduction)


@_amp.autocasts
def cosine_embedding_loss(input1, input2, target, margin=0, size_average=None, reduce=None,
                          reduction="mean"):
    """PyTorch's ``F.cosine_embedding_loss``: ``1 - cos(x1, x2)`` where ``target`` is 1,
    ``max(0, cos(x1, x2) - margin)`` where it is -1; the cosine as torch computes it here
    (``x1.x2 / sqrt((|x1|^2 + 1e-12) (|x2|^2 + 1e-12))``, not ``F.cosine_similarity``'s form)."""
    from .elementwise import where
    reduction = legacy_reduction(size_average, reduce, reduction)
    if input1.ndim not in (1, 2) or input1.ndim != input2.ndim:  # (of shapes that broadcast, as torch)
        raise RuntimeError(f"cosine_embedding_loss: expected 1-D or 2-D inputs of one rank, got "
                           f"{tuple(input1.shape)} and {tuple(input2.shape)}")
    target_ndim = np.ndim(_array(target))
    if target_ndim > 1 or input1.ndim != target_ndim + 1:  # (torch: a 1-D target pairs rows of 2-D inputs)
        raise RuntimeError(f"{target_ndim}D target tensor expects {target_ndim + 1}D input tensors, but found "
                           f"inputs with sizes {list(input1.shape)} and {list(input2.shape)}.")
    dim = 1 if input1.ndim == 2 else 0
    # (in ATen's order, the products' sum first: the order the nodes are made is the order a shared input's
    # gradients are added in, so another order is an ulp off in some of them)
    products = (input1 * input2).sum(dim)
    squared1 = (input1 * input1).sum(dim) + 1e-12
    squared2 = (input2 * input2).sum(dim) + 1e-12
    cos = products / (squared1 * squared2).sqrt()
    # (ATen's first broadcast is of the target with the cosine: the target is tensor a of its message)
    _broadcast_or_raise("cosine_embedding_loss", tuple(np.shape(_array(target))), tuple(cos.shape))
    zeros = cos.new_zeros(())
    # (ATen's 1 - cos is a SubBackward0 of a number filled in (no edge) and cos; cos - margin a Tensor-Scalar node)
    agreeing = name_node(1 - cos, "SubBackward0", graph=(None, cos))
    from .elementwise import aten_scalar  # (at call time, as above)
    loss = where(target == 1, agreeing, zeros) + where(target == -1, aten_scalar(cos - margin, cos).clamp_min(0), zeros)
    return _reduced("cosine_embedding_loss", loss, reduction)


# ---- batch and group normalisation ------------------------------------------------------------------
def _per_channel(t, ndim):
    """A [C] tensor shaped [1, C, 1, ...] to broadcast over an input of ``ndim`` dims."""
    return t.reshape((1, -1) + (1,) * (ndim - 2))


def _running_stats_as_aten(input, running_mean, running_var):
    """Whether ``_update_running_as_aten`` applies: a C-contiguous float32 batch with float32 statistics."""
    stats = [t for t in (running_mean, running_var) if t is not None]
    return (stats and input.dtype in (np.float32, np.float64) and all(t.dtype == input.dtype for t in stats)
            and not input.is_meta and _aten_kernel_view(input._array) is not None)  # (meta: no statistics to read)


def _update_running_as_aten(x, count, running_mean, running_var, momentum):
    """A float32 batch's running statistics as torch 2.13's CPU kernels update them (measured): the batch mean
    and the sum of squared deviations ``var_sum`` as ATen collects them (``_aten_batch_stats``), then
    ``running_mean = m * mean + (1 - m) * running_mean`` in float and
    ``running_var = fma(m, var_sum / (n - 1), (1 - m) * running_var)``, m the momentum as a float and 1 - m
    computed in float. float64: ``momentum * new + (1 - momentum) * old``, no multiply-add fused."""
    mean, var_sum = _aten_batch_stats(_aten_kernel_view(x), count)
    if x.dtype == np.float64:
        for stat, new in ((running_mean, mean), (running_var, var_sum / (count - 1))):
            if stat is not None:
                blended = momentum * new + (1 - momentum) * stat._array
                stat.copy_(Tensor._make(blended, stat._device, False, None))
        return
    m = np.float32(momentum)
    keep = np.float32(1) - m  # (in float: 1 - 1/3 rounds otherwise than float(2/3))
    if running_mean is not None:
        running_mean.copy_(Tensor._make(m * mean + keep * running_mean._array, running_mean._device, False, None))
    if running_var is not None:
        unbiased = var_sum / np.float32(count - 1)
        blended = float32_math.fused_multiply_add(m, unbiased, keep * running_var._array)
        running_var.copy_(Tensor._make(blended, running_var._device, False, None))


def _strided_batch(input, *stats):
    """A float32 or float64 batch laid out for neither of torch's batch-norm kernels (a slice, a permutation;
    float64: any but C-contiguous): its ``batch_norm_cpu_update_stats_template`` and
    ``batch_norm_backward_cpu_template`` run their own loops (``_strided_var_sum``, ``_batch_norm_backward_serial``),
    statistics of its dtype beside it."""
    x = input._array
    return (type(x) is np.ndarray and x.dtype in (np.float32, np.float64) and x.ndim > 1 and not input.is_meta
            and _aten_kernel_view(x) is None and all(t.dtype == x.dtype for t in stats))


def _update_running_strided(x, mean, count, running_mean, running_var, momentum):
    """The running statistics as torch's non-contiguous batch-norm loop blends them: in double, ``momentum * new +
    (1 - momentum) * old`` (the batch mean at::mean's, the unbiased variance from ``_strided_var_sum``), stored as
    float (minilora blended in float: 1 in 3 running means and variances an ulp off)."""
    news = ((running_mean, mean.astype(np.float64)),
            (running_var, None if running_var is None else _strided_var_sum(x, mean) / (count - 1)))
    for stat, new in news:
        if stat is not None:
            blended = momentum * new + (1 - momentum) * stat._array.astype(np.float64)
            stat.copy_(Tensor._make(blended.astype(stat.dtype), stat._device, False, None))


def _strided_var_sum(x, mean):
    """Each channel's sum of squared deviations as torch's non-contiguous batch-norm loop adds it: in double, one
    element after another in memory order (``cpu_serial_kernel``: ``var_sum += (i - mean) * (i - mean)``)."""
    rows = _in_memory_order(x, x).astype(np.float64)
    centred = rows - mean.astype(np.float64)[:, None]
    return np.cumsum(centred * centred, axis=1)[:, -1]  # (a running sum: in order, not pairwise)


def _in_memory_order(values, x):
    """``values`` (of ``x``'s shape [N, C, ...]) as [C, N * ...] rows, each channel's elements in the order
    TensorIterator walks ``x``'s (``float32_sums.sort_dimensions``: an expanded batch, stride 0, keeps its outermost
    place, where sorting by stride put it innermost: ~50% of such a batch's outputs an ulp off)."""
    others = [d for d in reversed(range(x.ndim)) if d != 1]  # (innermost first)
    order = float32_sums.sort_dimensions(others, x.shape, [x.strides])[::-1]
    return np.transpose(np.broadcast_to(values, x.shape), [1] + order).reshape(x.shape[1], -1)


def _aten_kernel_view(x):
    """The array torch's float32 batch-norm kernels read ``x`` [N, C, ...] as: ``x`` itself where it takes the
    contiguous kernel (C-contiguous, more than one element per sample and channel), [N * H * W, C] rows where
    it takes the channels-last one (a channels_last(_3d) input, or one element per sample and channel: [N, C],
    NC11), None for any other layout (float64 too)."""
    if type(x) is not np.ndarray or x.ndim < 2:
        return None
    n, c = x.shape[:2]
    if x.flags.c_contiguous and x.size > n * c:
        return x
    rows = np.moveaxis(x, 1, -1)
    if rows.flags.c_contiguous or (x.flags.c_contiguous and x.size == n * c):
        return np.ascontiguousarray(rows).reshape(-1, c)
    return None


def aten_training_statistics(view, count, eps):
    """The batch's mean and invstd per channel that torch's float32 kernel normalises by (and native_batch_norm
    returns): ATen's mean and var_sum of ``view`` (``_aten_kernel_view``'s), invstd = 1 / sqrt(var_sum / n + eps)
    with the quotient in float, the rest in double."""
    mean, var_sum = _aten_batch_stats(view, count)
    if view.dtype == np.float64:
        return mean, 1 / np.sqrt(var_sum / count + eps)
    return mean, (1 / np.sqrt((var_sum / np.float32(count)).astype(np.float64) + eps)).astype(np.float32)


def _aten_batch_stats(x, count):
    """(mean, var_sum) of each channel of a C-contiguous float32 [N, C, ...] batch as ATen computes them. With
    more than one element per sample and channel (batch_norm_cpu_collect_stats_contiguous_impl): the sum in
    double over N, divided and rounded to float, and the float squares ``(x - mean)^2`` added in double. A
    [N, C] batch is read as channels-last (its channels_last_impl): the rows cut into one chunk per thread
    (``at::parallel_for(0, N, 1)``, torch's thread count taken as ``parallel.num_threads()``), each chunk's
    rows added in float32 in order (squares by fused multiply-adds), the chunks' sums added in double. float64:
    ``_aten_batch_stats64``."""
    if x.dtype == np.float64 and x.ndim > 2:
        return _aten_batch_stats64(x, count)
    if x.ndim > 2:
        axes = (0,) + tuple(range(2, x.ndim))
        mean = (x.sum(axis=axes, dtype=np.float64) / count).astype(np.float32)
        centred = x - mean.reshape((1, -1) + (1,) * (x.ndim - 2))
        return mean, (centred * centred).sum(axis=axes, dtype=np.float64).astype(np.float32)
    chunk = float32_sums.thread_chunk(count, grain=1)
    if count == 2 and x.shape[1] <= 16:  # (measured, torch 2.13 on 2 threads: two rows of at most 16 channels
        chunk = count  # are added by one thread, both dtypes; 3 rows, or 17 channels, split)
    starts = range(0, count, chunk)
    # (rows in order: cumsum, as NumPy's add.reduce pairs the rows of a one-channel [N, 1] batch, a contiguous run)
    total = sum(np.cumsum(x[s:s + chunk], axis=0)[-1].astype(np.float64) for s in starts)
    mean = (total / count).astype(x.dtype)
    centred, squares = x - mean, np.zeros(x.shape[1], np.float64)
    for s in starts:  # (a row at a time: each fused multiply-add rounds)
        squares += _fma_column_sums(centred[s:s + chunk], centred[s:s + chunk])
    return mean, squares.astype(x.dtype)


def _fma_column_sums(rows, others):
    """Each column's ``rows * others`` added down the rows from 0 by fused multiply-adds in the rows' dtype (a thread's
    chunk of a channels-last batch: float32 compiled, float64 a row at a time)."""
    if rows.dtype == np.float32:
        return float32_sums.fma_product_columns(rows, others)
    total = np.zeros(rows.shape[1], rows.dtype)
    for row, other in zip(rows, others):
        total = float32_math.fused_multiply_add64(row, other, total)
    return total


def _aten_batch_stats64(x, count):
    """(mean, var_sum) of each channel of a C-contiguous float64 [N, C, ...] batch as the contiguous kernel
    (batch_norm_cpu_collect_stats_contiguous_impl) adds them in double: the elements one after another, sample by
    sample, the sum divided by n; then the squares ``(x - mean)^2`` one after another, where torch's build fuses the
    square of a sample's odd last element into the running sum (its loop takes the elements in pairs: measured,
    ~1.5% of variances an ulp off otherwise)."""
    n, c = x.shape[:2]
    rows = x.reshape(n, c, -1)
    width = rows.shape[2]
    in_order = np.moveaxis(rows, 0, 1).reshape(c, -1)
    mean = np.cumsum(in_order, axis=1)[:, -1] / count  # (cumsum: left to right, where sum is pairwise)
    centred = rows - mean[None, :, None]
    pairs = width - width % 2
    squares = centred[:, :, :pairs] * centred[:, :, :pairs]
    if pairs == width:
        return mean, np.cumsum(np.moveaxis(squares, 0, 1).reshape(c, -1), axis=1)[:, -1]
    var_sum = np.zeros(c)
    for sample in range(n):
        var_sum = np.cumsum(np.concatenate([var_sum[:, None], squares[sample]], axis=1), axis=1)[:, -1]
        last = centred[sample, :, -1]
        var_sum = float32_math.fused_multiply_add64(last, last, var_sum)
    return mean, var_sum


def _blend_(stat, new, momentum):
    """``stat = (1 - momentum) * stat + momentum * new`` in place, computed in ``new``'s dtype (float32
    for 16-bit statistics: rounded once, as torch)."""
    stat.copy_(stat.to(new.dtype) * (1 - momentum) + new * momentum)


@saving_as_torch("input", "weight")  # what torch's one node keeps
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-05):
    """PyTorch's ``F.batch_norm`` over an input [N, C, ...]: each channel normalised by the
    statistics of the batch (``training``: the mean and biased variance over every dim but 1) or
    by ``running_mean``/``running_var``; then ``* weight + bias``. In training, the running
    statistics are updated in place as torch does: ``(1 - momentum) * old + momentum * new`` with
    the *unbiased* batch variance."""
    if input.numel() == 0:  # torch's shortcut, before its size checks (a 1-D one too): no statistics to take
        return _empty_batch_norm(input, weight, bias)
    if input.ndim < 2:  # torch's RuntimeError (it reads a 1-D input as having no channels)
        raise RuntimeError(f"batch_norm: expected an input [N, C, ...], got shape {tuple(input.shape)}")
    refuse_integer_batch_norm(input)
    _check_parameter_dtypes(input, running_mean, running_var, weight, bias)
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):  # (torch's order)
        if t is not None and t.numel() != input.shape[1]:
            raise RuntimeError(f"{name} should contain {input.shape[1]} elements not {t.numel()}")
    refuse_complex("batch_norm", input)  # (torch's CPU kernel takes real dtypes only)
    if training and (running_mean is not None or running_var is not None):
        _refuse_running_stats_under_vmap()
    out = _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    out = out.contiguous(memory_format=suggested_format(input._array))  # (torch's kernel writes into
    # empty_like(suggested)); native_batch_norm_backward gives the bias's gradient too, from input and weight
    out = backward_reads(out, input, weight, zeros=False)
    return name_node(out, "NativeBatchNormBackward0", input, graph=(input, weight, bias))


def _refuse_running_stats_under_vmap():
    """torch.func.vmap's batch norm rule: in training, running statistics shared by every sample would be updated
    once per sample (minilora's vmap runs the samples one by one), so torch refuses, in these words (its two
    sentences run together, as they print)."""
    from .. import forward_ad  # (at call time: forward_ad imports the ops)
    if forward_ad.inside_vmap():
        raise RuntimeError("Batch norm got a batched tensor as input while the running_mean or running_var, which "
                           "will be updated in place, were not batched.\nIf you are using a module and do not need "
                           "eval mode, please set `track_running_stats` to be False.If you are using a prebuilt "
                           "module and do not need eval mode, please see the functorch website for resources on how "
                           "to patch your module to work with vmap")


def refuse_integer_batch_norm(input):
    """torch's batch_norm kernel has no integer or bool version (and checks that before the parameters' dtypes)."""
    if input.dtype.kind in "biu":
        raise NotImplementedError(f'"batch_norm" not implemented for \'{torch_name(input.dtype)}\'')


def _empty_batch_norm(input, weight, bias):
    """An empty input's batch norm as torch's: a copy (a node for the gradients), scaled by the first
    weight and shifted by the first bias (so that their gradients are zeros, not None)."""
    out = input.clone()
    if weight is not None:
        out = out * weight[0]
    if bias is not None:
        out = out + bias[0]
    return out


def _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps):
    if _is_16bit_float(input):  # torch's two 16-bit kernels: parameters in the input's dtype, or float32
        mixed = not _all_16bit_parameters(input, running_mean, running_var, weight, bias)
        if training:
            return _batch_norm_16bit_training(input, running_mean, running_var, weight, bias, momentum, eps, mixed)
        if running_mean is not None and running_var is not None:  # torch: 1/std in float32, not rounded
            mean = running_mean._array.astype(np.float32)
            invstd = (1 / xp_of(mean).sqrt(running_var._array.astype(np.float32) + np.float32(eps))).astype(np.float32)
            return BatchNorm16.apply(input, weight, bias, mean=mean, invstd=invstd, training=False)
    if _is_16bit_float(input):  # in float32, rounded once; the running statistics updated in place
        up = lambda t: t.float() if _is_16bit_float(t) else t  # noqa: E731
        return _batch_norm(input.float(), running_mean, running_var, up(weight), up(bias), training,
                           momentum, eps).to(input.dtype)
    for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
        if stat is not None and stat.requires_grad:  # statistics, not parameters (torch's rule)
            raise RuntimeError(f"batch_norm is not differentiable with respect to argument '{name}'. "
                               f"This input cannot have requires_grad True.")
    axes = (0,) + tuple(range(2, input.ndim))
    if training:
        count = input.numel() // input.shape[1]  # (one value a channel: variance 0, its unbiased form 0 / 0)
        mean = input.mean(axes, keepdim=True)
        var = input.var(axes, keepdim=True, correction=0)
        with no_grad():
            if count and _running_stats_as_aten(input, running_mean, running_var):
                _update_running_as_aten(input._array, count, running_mean, running_var, momentum)
            elif count and _strided_batch(input, *[t for t in (running_mean, running_var) if t is not None]):
                _update_running_strided(input._array, mean._array.reshape(-1), count, running_mean, running_var,
                                        momentum)
            else:
                if running_mean is not None:
                    _blend_(running_mean, mean.reshape(-1), momentum)
                if running_var is not None:  # (one value a channel: ATen's 0 / 0, NaN)
                    _blend_(running_var, var.reshape(-1) * (count / (count - 1) if count > 1 else math.inf), momentum)
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError("batch_norm: running_mean and running_var are needed when not training")
        mean, var = (_per_channel(stat.to(input.dtype), input.ndim) for stat in (running_mean, running_var))
    out = (input - mean) * (var + eps).rsqrt()
    if weight is not None:
        out = out * _per_channel(weight, input.ndim)
    if bias is not None:
        out = out + _per_channel(bias, input.ndim)
    exact = _batch_norm_as_aten(input, running_mean, running_var, weight, bias, training, eps)
    if exact is None and _strided_batch(input, *[t for t in (running_mean, running_var, weight, bias) if t is not None]):
        exact = out._array  # (float32: the composed values are torch's loop's; its backward is the serial one)
        if input.dtype == np.float64:
            exact = _strided_values64(input, running_mean, running_var, weight, bias, training, eps)
    if exact is None:
        return out
    gradients = _batch_norm_backward_as_aten(input, running_mean, running_var, weight, training, eps)
    if gradients is None:
        return KernelValues.apply(out, values=exact)
    return KernelGradients.apply(out, input, weight, bias, values=exact, gradients=gradients)


def _strided_values64(input, running_mean, running_var, weight, bias, training, eps):
    """A float64 batch norm's output where torch's transform runs its TensorIterator loop (``_strided_batch``):
    ``((x - mean) * invstd) * w + b``, each step rounded; training's mean at::mean's and invstd = 1 / sqrt(var_sum /
    n + eps) with the serial loop's var_sum, eval's 1 / sqrt(running_var + eps)."""
    x = input._array
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        mean = input.mean((0,) + tuple(range(2, x.ndim)))._array
        invstd = 1 / np.sqrt(_strided_var_sum(x, mean) / (x.size // x.shape[1]) + eps)
    else:
        mean, invstd = running_mean._array, 1 / np.sqrt(running_var._array + eps)
    out = (x - mean.reshape(shape)) * invstd.reshape(shape)
    if weight is not None:
        out = out * weight._array.reshape(shape)
    return out if bias is None else out + bias._array.reshape(shape)


class KernelValues(Clone):
    """``values`` (a torch kernel's bits, computed aside) in the place of ``a``, the same function composed of
    minilora's ops, whose gradient passes through unchanged (and twice differentiable, as Clone)."""

    @staticmethod
    def forward(ctx, a, values):
        return values


class KernelGradients(Function):
    """``values`` (a torch kernel's bits) in the place of ``composed`` (the same function of ``x``, ``weight`` and
    ``bias`` composed of minilora's ops), whose inputs get the kernel's own gradients: ``gradients(g, needs)``
    answers (gx, gw, gb). The composed graph receives none (each input is differentiated once); a recorded pass
    (create_graph=True, minilora/ops/higher_order.py) differentiates the composed graph instead. ``values`` are laid
    out as ``composed`` (whose ops laid it out as torch's: a channels_last or transposed input's order), unless the
    kernel laid them out itself (known_layout: batch norm's channels_last kernel)."""
    torch_layout = "own"

    @staticmethod
    def forward(ctx, composed, x, weight, bias, values, gradients):
        ctx.gradients = gradients
        if type(values) is np.ndarray and not (values.flags.c_contiguous and composed.flags.c_contiguous) \
                and not layout_is_known(values) and layout_is_known(composed):
            strides = known_strides(composed)
            values = laid_out_in_strides(values, strides or tuple(s // composed.itemsize for s in composed.strides))
        return values

    @staticmethod
    def backward(ctx, g):
        return (None,) + tuple(ctx.gradients(g, ctx.needs_input_grad[1:]))


def _batch_norm_backward_as_aten(input, running_mean, running_var, weight, training, eps):
    """torch 2.13's float32 batch-norm backward (``batch_norm_cpu_backward_kernel``) as a function of (g, needs)
    for ``KernelGradients``: its contiguous kernel or its channels-last one (``_aten_kernel_view``), with the
    statistics its forward saved. None where the kernel is another (the composed gradients stand). float64: the
    contiguous kernel and the serial loops (``_strided_batch``)."""
    x = input._array
    view = _aten_kernel_view(x)
    strided = _strided_batch(input, *[t for t in (running_mean, running_var, weight) if t is not None])
    if (view is None and not strided) or float32_math.CPU_CAPABILITY == "default":
        return None
    c = x.shape[1]
    count = x.size // c
    if strided and training:  # (at::mean's mean, the serial loop's var_sum; invstd in double, stored as float)
        mean = input.mean((0,) + tuple(range(2, x.ndim)))._array
        invstd = (1 / np.sqrt(_strided_var_sum(x, mean) / count + eps)).astype(x.dtype)
    elif training:
        mean, invstd = aten_training_statistics(view, count, eps)
    else:
        mean = running_mean._array  # (the backward's 1 / std::sqrt(running_var[c] + eps): eps a double, so the root
        invstd = (1 / np.sqrt(running_var._array.astype(np.float64) + eps)).astype(x.dtype)  # in double, stored
        # as float, where the forward kernel's is float's)
    w = np.ones(c, x.dtype) if weight is None else weight._array
    kernel = _batch_norm_backward_contiguous if view is x else _batch_norm_backward_channels_last

    def gradients(g, needs):
        if strided:
            return _batch_norm_backward_serial(g, needs, x=x, mean=mean, invstd=invstd, w=w, training=training)
        same_layout = g.flags.c_contiguous if view is x else _aten_kernel_view(g) is not None and (
            x.flags.c_contiguous == g.flags.c_contiguous)  # (NC11 and [N, C]: both layouts at once)
        chosen = kernel if same_layout else _batch_norm_backward_serial
        return chosen(g, needs, x=x, mean=mean, invstd=invstd, w=w, training=training)
    return gradients


def _batch_norm_backward_serial(g, needs, x, mean, invstd, w, training):
    """batch_norm_backward_cpu_template's own loops, where the gradient is laid out otherwise than the input
    (ATen's kernels want both alike; a gradient expanded from a sum is neither): gb = torch's sum of dy (in dy's
    layout); dotp the products (x - mean) * dy added in double (float64's one after another in the input's memory
    order, unfused: ``_in_memory_order``), gw = dotp * invstd in double; dx = (dy - gb / n - (x - mean) * k) *
    invstd * w with k = dotp * invstd * invstd / n in the input's dtype, each step rounded (training), dy *
    invstd * w (eval)."""
    c = x.shape[1]
    dtype = x.dtype.type
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, c) + (1,) * (x.ndim - 2)
    count = x.size // c
    centred = x - mean.reshape(shape)
    total = float32_sums.torch_order_sum(g, axes)
    if dtype is np.float64:
        dotp = np.cumsum(_in_memory_order(centred * g, x), axis=1)[:, -1]  # (cumsum: in order)
    else:
        dotp = (centred * g).sum(axis=axes, dtype=np.float64)  # (float products: exact in double, any order)
    gx = None
    if needs[0]:
        if training:
            k = dotp.astype(dtype) * invstd * invstd / dtype(count)
            gx = (g - (total / dtype(count)).reshape(shape) - centred * k.reshape(shape))
            gx = gx * invstd.reshape(shape) * w.reshape(shape)
        else:
            gx = g * invstd.reshape(shape) * w.reshape(shape)
    gw = (dotp * invstd).astype(dtype) if needs[1] else None
    return gx, gw, total if needs[2] else None


def _batch_norm_backward_contiguous(g, needs, x, mean, invstd, w, training):
    """``batch_norm_cpu_backward_contiguous_impl`` (measured on torch's AVX-512 build, whose kernel is the AVX2
    one: 8 floats or 4 doubles a vector): per sample and channel ``vec::reduce_all`` of dy and ``map2_reduce_all``
    of ``(x - mean) * dy`` (``fastmath.lane_sum``, the partial vector fused), each added into a double; then
    gb = sum, gw = dotp * invstd in double; dx = fma(-(x - mean), k, dy - sum / N) * invstd * w with
    k = float(dotp) * invstd * invstd / N in float (training), dy * invstd * w (eval). float64: all of it in
    double."""
    n, c = x.shape[:2]
    count = x.size // c
    dtype = x.dtype.type
    shape = (1, c) + (1,) * (x.ndim - 2)
    dys, xs = np.ascontiguousarray(g).reshape(n, c, -1), x.reshape(n, c, -1)
    total, dotp = np.zeros(c), np.zeros(c)
    lanes = 32 // x.itemsize
    for i in range(n):  # (one sample after another, each sample's sums added into doubles)
        total += fastmath.lane_sum(np.ascontiguousarray(dys[i]), lanes=lanes)
        dotp += fastmath.lane_sum(np.ascontiguousarray(xs[i] - mean[:, None]), np.ascontiguousarray(dys[i]),
                                  fuse_tail=True, lanes=lanes)
    gx = None
    if needs[0]:
        scale = np.broadcast_to(invstd.reshape(shape), x.shape)
        if training:
            k = dotp.astype(dtype) * invstd * invstd / dtype(count)
            shifted = g - (total / count).astype(dtype).reshape(shape)
            fma = float32_math.fused_multiply_add64 if dtype is np.float64 else float32_math.fused_multiply_add
            gx = fma(-(x - mean.reshape(shape)), np.broadcast_to(k.reshape(shape), x.shape), shifted)
            gx = gx * scale * w.reshape(shape)
        else:
            gx = g * scale * w.reshape(shape)
    gw = (dotp * invstd).astype(dtype) if needs[1] else None
    gb = total.astype(dtype) if needs[2] else None
    return gx, gw, gb


def _batch_norm_backward_channels_last(g, needs, x, mean, invstd, w, training):
    """``batch_norm_cpu_backward_channels_last_impl`` on [M, C] rows (M = N * H * W): the rows cut into one chunk
    a thread (``at::parallel_for(0, M, 1)``), each chunk's dy and fma(x - mean, dy, dotp) added row after row in
    float, the threads' buffers added in double and rounded; gb = sum, gw = dotp * invstd; dx = (dy - sum / M - (x - mean)
    * k) * invstd * w with k = dotp * invstd * invstd / M, by a fused multiply-add on the channels in whole 8-float
    vectors, as written on the others (training), dy * invstd * w (eval)."""
    c = x.shape[1]
    rows = _aten_kernel_view(x)
    dys = np.ascontiguousarray(np.moveaxis(g, 1, -1)).reshape(-1, c)  # (the gradient as the same rows)
    count = len(rows)
    chunk = float32_sums.thread_chunk(count, grain=1)
    total, dotp = np.zeros(c), np.zeros(c)
    for start in range(0, count, chunk):  # (a thread's buffer: its rows in order)
        piece = slice(start, min(count, start + chunk))
        part_sum = np.cumsum(dys[piece], axis=0, dtype=x.dtype)[-1]  # (cumsum: row after row, in order)
        part_dot = _fma_column_sums(rows[piece] - mean, dys[piece])
        total, dotp = total + part_sum, dotp + part_dot  # (the buffers added in double: 3+ threads tell)
    total, dotp = total.astype(x.dtype), dotp.astype(x.dtype)
    gx = None
    if needs[0]:
        if training:
            k = dotp * invstd * invstd / x.dtype.type(count)
            grad_mean = total / x.dtype.type(count)
            centred = rows - mean
            gx = (dys - grad_mean - centred * k) * invstd * w
            vectors = c - c % (8 if x.dtype == np.float32 else 4)  # (whole AVX2 vectors: 8 floats, 4 doubles)
            fma = float32_math.fused_multiply_add if x.dtype == np.float32 else float32_math.fused_multiply_add64
            gx[:, :vectors] = (fma(-centred, np.broadcast_to(k, rows.shape), dys - grad_mean) * invstd * w)[:, :vectors]
        else:
            gx = dys * invstd * w
        gx = np.moveaxis(gx.reshape((x.shape[0],) + x.shape[2:] + (c,)), -1, 1)
        gx = np.ascontiguousarray(gx) if x.flags.c_contiguous else gx  # (laid out as the input)
    gw = dotp * invstd if needs[1] else None
    gb = total if needs[2] else None
    return gx, gw, gb


def _batch_norm_as_aten(input, running_mean, running_var, weight, bias, training, eps):
    """A C-contiguous float32 batch norm's output as torch 2.13's CPU kernel computes it (measured; the AVX builds,
    which fuse its multiply-adds): per channel alpha = invstd * weight and beta = fma(-mean, alpha, bias), then
    fma(x, alpha, beta). Training: ATen's batch mean and var_sum (``_aten_batch_stats``), invstd = 1 / sqrt(var_sum
    / n + eps) with the quotient in float, the rest in double; eval: 1 / sqrt(running_var + eps) in float. None
    where this is not that kernel (another dtype or layout, a default build): the composed formula stands. float64
    (its contiguous kernel): the same steps in double."""
    x = input._array
    params = [t for t in (weight, bias) if t is not None]
    stats = [] if training else [running_mean, running_var]
    if not (float32_math.FUSED_MULTIPLY_ADD and type(x) is np.ndarray and x.dtype in (np.float32, np.float64)
            and not input.is_meta and _aten_kernel_view(x) is not None  # (meta: shapes only, the composed ops'
            and all(type(t._array) is np.ndarray and t.dtype == x.dtype for t in params + stats)):  # meta rules)
        return None
    count = x.size // x.shape[1]
    if training:
        mean, invstd = aten_training_statistics(_aten_kernel_view(x), count, eps)
    else:
        mean = running_mean._array
        invstd = x.dtype.type(1) / np.sqrt(running_var._array + x.dtype.type(eps))
    alpha = invstd if weight is None else invstd * weight._array
    fma = float32_math.fused_multiply_add64 if x.dtype == np.float64 else float32_math.fused_multiply_add
    beta = -mean * alpha if bias is None else fma(-mean, alpha, bias._array)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    # (alpha and beta spread to x's shape in memory: the compiled fma takes them so, exact with subnormal parts too)
    alpha, beta = (np.ascontiguousarray(np.broadcast_to(v.reshape(shape), x.shape)) for v in (alpha, beta))
    return fma(np.ascontiguousarray(x), alpha, beta)


def _all_16bit_parameters(input, *params):
    """torch's two CPU kernels for a 16-bit input: every parameter and statistic given in the input's
    dtype (True), or every one in float32 (False, the "mixed" kernel: float32 inside, rounded once).
    Any other mix is torch's RuntimeError."""
    given = [p for p in params if p is not None]
    if all(p.dtype == input.dtype for p in given):
        return True
    if all(p.dtype == float32 for p in given):
        return False
    raise RuntimeError(f"mixed dtype (CPU): expect parameter to have scalar type of Float (batch_norm of a "
                       f"{input.dtype} input takes its weight, bias and running statistics all in "
                       f"{input.dtype} or all in float32, got {[str(p.dtype) for p in given]})")


def _round(a, dtype):
    """``a`` (float32) rounded to the 16-bit ``dtype``, kept in float32."""
    return a.astype(dtype).astype(np.float32)


def _batch_norm_16bit_training(input, running_mean, running_var, weight, bias, momentum, eps, mixed=False):
    """Training batch norm of a bfloat16/float16 input as torch's CPU kernels compute it. With every
    parameter in the input's dtype it keeps the batch mean and 1/std in the 16-bit dtype (bfloat16
    also the sum of squared deviations, and it updates the running statistics in bfloat16
    arithmetic); with float32 parameters (``mixed``, autocast's case) it keeps them in float32 and
    updates in float32. Then ``x * alpha + beta`` in float32, rounded once. Bit for bit torch's
    numbers in the first case, running stats included."""
    count = input.numel() // input.shape[1]
    stats = batch_norm_16bit_statistics(input, eps, mixed)
    with no_grad():
        if mixed:
            _update_running_float32(running_mean, running_var, stats.mean, stats.squares / np.float32(count - 1),
                                    momentum)
        else:
            _update_running_16bit(running_mean, running_var, stats.mean, stats.short_mean, stats.squares, count,
                                  momentum)
    return BatchNorm16.apply(input, weight, bias, mean=stats.short_mean, invstd=stats.invstd)


def batch_norm_16bit_statistics(input, eps, mixed):
    """A 16-bit batch's statistics as torch's two CPU kernels keep them (float32 arrays): ``mean`` (float32, sum / N),
    ``short_mean`` (the mean the kernel normalises by: rounded to the dtype, ``mean`` itself when ``mixed``),
    ``squares`` (the squared deviations' sum) and ``invstd``. The sums are the kernel's float32 ones
    (``_batch_16bit_sums``); bfloat16 rounds the squares' sum, then divides in bfloat16 (the count rounded too)."""
    xp, dtype = xp_of(input._array), input.dtype
    count = input.numel() // input.shape[1]
    mean, squares = _batch_16bit_sums(input._array, mixed)
    if mixed:
        # (ATen's InvStd: the float32 variance plus the double eps, the root and division in double)
        invstd = (1 / xp.sqrt((squares / np.float32(count)).astype(np.float64) + eps)).astype(np.float32)
        return types.SimpleNamespace(mean=mean, short_mean=mean, squares=squares, invstd=invstd)
    short_mean = _round(mean, dtype)
    if dtype == np.float16:  # the squares' sum kept in float32
        invstd = _round(1 / xp.sqrt(squares / np.float32(count) + np.float32(eps)), dtype)
    else:  # bfloat16: the squares' sum rounded; divided in bfloat16 (count rounded too)
        squares = _round(squares, dtype)
        variance = _round(squares / _round(np.float32(count), dtype), dtype)
        invstd = _round(1 / xp.sqrt(variance + np.float32(eps)), dtype)
    return types.SimpleNamespace(mean=mean, short_mean=short_mean, squares=squares, invstd=invstd)


def _batch_16bit_sums(x, mixed):
    """(mean, squared deviations' sum) per channel of a 16-bit batch [N, C, ...], float32, added as torch's kernel
    for its layout adds them (``float32_sums.batch_norm_contiguous_sums`` / ``batch_norm_channels_last_sums``: the
    order of the additions is what makes a float32 mean's last bit). The contiguous kernel centres on the float32
    mean; the channels-last one on the mean as stored (rounded to the dtype, unless ``mixed``). Other layouts (and
    CuPy arrays): sums in float64, rounded once (torch's TensorIterator loops there: not modelled)."""
    count = x.size // x.shape[1]
    view = _aten_kernel_view(x)
    if view is None:
        axes = (0,) + tuple(range(2, x.ndim))
        xf = x.astype(np.float32)
        mean = (xf.sum(axes, dtype=np.float64) / count).astype(np.float32)
        squares = ((xf - _per_channel_array(mean, x.ndim)) ** 2).sum(axes, dtype=np.float64).astype(np.float32)
        return mean, squares
    if view is x:  # contiguous, more than one element per sample and channel
        terms = x.astype(np.float32).reshape(x.shape[0], x.shape[1], -1)
        mean = float32_sums.batch_norm_contiguous_sums(terms) / np.float32(count)
        centred = terms - mean[:, None]
        return mean, float32_sums.batch_norm_contiguous_sums(centred * centred)
    rows = view.astype(np.float32)
    mean = float32_sums.batch_norm_channels_last_sums(rows) / np.float32(count)
    stored = mean if mixed else _round(mean, x.dtype)
    if x.dtype == np.float16 and len(rows) <= parallel.num_threads():  # (its serial loop, measured: about the
        stored = mean  # float32 mean, 1 of [2, 102]'s channels, a tie; bfloat16's about the stored one)
    centred = rows - stored
    return mean, float32_sums.batch_norm_channels_last_sums(centred, centred)


def _per_channel_array(a, ndim):
    return a.reshape((1, -1) + (1,) * (ndim - 2))


def _update_running_16bit(running_mean, running_var, mean, short_mean, squares, count, momentum):
    """torch's update of 16-bit running statistics, in place. float16: ``momentum * new + (1 -
    momentum) * old`` in float64 (the float32 mean), rounded once. bfloat16: the same in bfloat16
    arithmetic (the momentum, 1 - momentum and each product rounded to bfloat16; the variance's
    product with the momentum kept in float32), with the rounded mean and variance sum."""
    stats = [t for t in (running_mean, running_var) if t is not None]
    if not stats:
        return
    dtype = stats[0].dtype
    if dtype == np.float16:
        updates = ((running_mean, mean), (running_var, squares / np.float32(count - 1)))
    else:
        unbiased = _round(squares / _round(np.float32(count - 1), dtype), dtype)
        updates = ((running_mean, short_mean), (running_var, unbiased))
    for stat, new in updates:
        if stat is not None:
            old = stat._array.astype(np.float32)
            blended = _blend_float16(old, new, momentum) if dtype == np.float16 else \
                _blend_bfloat16(old, new, momentum, dtype, keep_product=stat is running_var)
            stat._array[...] = blended.astype(dtype)
            stat._bump_version()


def _update_running_float32(running_mean, running_var, mean, unbiased, momentum):
    """torch's "mixed" kernel (float32 statistics of a 16-bit input): ``m * new + (1 - m) * old``
    in float32 arithmetic, ``m`` the momentum as a float32."""
    m = np.float32(momentum)
    for stat, new in ((running_mean, mean), (running_var, unbiased)):
        if stat is not None:
            stat._array[...] = m * new + (np.float32(1) - m) * stat._array
            stat._bump_version()


def _blend_float16(old, new, momentum):
    """``momentum * new + (1 - momentum) * old`` in float64."""
    return momentum * new.astype(np.float64) + (1 - momentum) * old.astype(np.float64)


def _blend_bfloat16(old, new, momentum, dtype, keep_product):
    """The same blend in bfloat16 arithmetic: every operand and product rounded to ``dtype``
    (``keep_product``: ``momentum * new`` stays float32, as torch's float variance times it)."""
    m = _round(np.float32(momentum), dtype)
    kept = _round(_round(np.float32(1) - m, dtype) * old, dtype)
    moved = m * new if keep_product else _round(m * new, dtype)
    return moved + kept


def _batch_16bit_gradient_sums(centred, g, dtype):
    """(sum of ``g``, sum of ``centred * g``) per channel, float32, as torch's ``dtype`` backward kernel for the layout
    adds them (the same orders as ``_batch_16bit_sums``; channels-last always by threads' chunks). Gradients laid out
    otherwise than the input: sums in float64, rounded once (torch's TensorIterator loops there: not modelled)."""
    view, g_view = _aten_kernel_view(centred), _aten_kernel_view(g)
    if view is None or g_view is None or (view is centred) != (g_view is g):
        axes = (0,) + tuple(range(2, g.ndim))
        return (g.sum(axes, dtype=np.float64).astype(np.float32),
                (centred * g).sum(axes, dtype=np.float64).astype(np.float32))
    if view is centred:
        shape = (g.shape[0], g.shape[1], -1)
        return (float32_sums.batch_norm_contiguous_sums(g.reshape(shape)),
                float32_sums.batch_norm_contiguous_sums(centred.reshape(shape), g.reshape(shape),
                                                        fused_rest=dtype == np.float16))
    return (float32_sums.batch_norm_channels_last_sums(g_view, few_rows_serial=False),
            float32_sums.batch_norm_channels_last_sums(view, g_view, few_rows_serial=False))


class BatchNorm16(Function):
    """``x * alpha + beta`` per channel with ``alpha = invstd * weight`` and ``beta = bias - mean *
    alpha`` (float32, fused multiply-add where torch's build fuses), rounded to the 16-bit dtype; in training the batch's
    ``mean`` and ``invstd`` come in already rounded, as torch keeps them (in eval: the running
    statistics, 1/std in float32). Backward is torch's formula in float32 with those same
    statistics, each gradient rounded once."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, training=True):
        xf, nd = x.astype(np.float32), x.ndim
        ctx.training = training
        w = weight.astype(np.float32) if weight is not None else np.float32(1)
        b = bias.astype(np.float32) if bias is not None else np.float32(0)
        alpha = (invstd * w).astype(np.float32)
        mixed = any(p is not None and p.dtype == np.float32 for p in (weight, bias))
        if mixed:  # (float32 parameters: ATen's build fuses bias - mean * alpha; a 16-bit bias: measured unfused)
            beta = fastmath.multiply_add(-mean, alpha, np.float32(b))
        else:
            beta = (b - mean * alpha).astype(np.float32)
        # (x * alpha + beta: one fused multiply-add where torch's build fuses, two roundings in its default one)
        out = fastmath.multiply_add(xf, _per_channel_array(alpha, nd), _per_channel_array(beta, nd))
        ctx.x, ctx.w, ctx.mean, ctx.invstd = xf, w, mean, invstd
        ctx.param_dtype = (weight if weight is not None else bias if bias is not None else x).dtype
        return out.astype(x.dtype)

    @staticmethod
    def backward(ctx, g):
        dtype, gf, x, nd = g.dtype, g.astype(np.float32), ctx.x, ctx.x.ndim
        count = x.size // x.shape[1]
        centred = x - _per_channel_array(ctx.mean, nd)
        total, dotp = _batch_16bit_gradient_sums(centred, gf, dtype)
        k = dotp * ctx.invstd * ctx.invstd / np.float32(count)
        per = lambda a: _per_channel_array(a, nd)  # noqa: E731
        if ctx.training:
            # (dy - mean(dy)) - centred * k: one fused multiply-add where ATen's build fuses it (measured: all but
            # bfloat16's channels-last kernel)
            centred_k = np.broadcast_to(per(k), centred.shape)
            if dtype == np.float16 or _aten_kernel_view(centred) is centred:
                dx = fastmath.multiply_add(-centred, centred_k, gf - per(total / np.float32(count)))
            else:
                dx = gf - per(total / np.float32(count)) - centred * centred_k
            dx = dx * per(ctx.invstd) * per(ctx.w)
        else:  # the running statistics are constants: a per-channel scale
            dx = gf * per(ctx.invstd) * per(ctx.w)
        gx = dx.astype(dtype) if ctx.needs_input_grad[0] else None
        gw = (dotp * ctx.invstd).astype(ctx.param_dtype) if ctx.needs_input_grad[1] else None
        gb = total.astype(ctx.param_dtype) if ctx.needs_input_grad[2] else None
        return gx, gw, gb


@composed_layout_unknown  # (from a channels_last input: Function.torch_layout)
@_amp.autocasts
@saving_as_torch("input", "weight")  # what torch's one node keeps
def group_norm(input, num_groups, weight=None, bias=None, eps=1e-05):
    """PyTorch's ``F.group_norm``: the channels of an input [N, C, ...] split into ``num_groups``
    groups, each normalised by its own mean and biased variance (per sample), then ``* weight +
    bias`` per channel."""
    _check_parameter_dtypes(input, weight, bias)
    out = _group_norm(input, num_groups, weight, bias, eps)  # (torch: one node on the three)
    if _group_norm_16bit_kernel_runs(input, weight, bias):
        exact, gradients = _group_norm_16bit_as_torch(input, num_groups, weight, bias, eps)
        return name_node(KernelGradients.apply(out, input, weight, bias, values=exact, gradients=gradients),
                         "NativeGroupNormBackward0", input, graph=(input, weight, bias))
    exact = _group_norm_as_aten(input, num_groups, weight, bias, eps)
    if exact is not None:
        gradients = _group_norm_backward_as_aten(input, num_groups, weight, eps)
        out = KernelValues.apply(out, values=exact) if gradients is None else \
            KernelGradients.apply(out, input, weight, bias, values=exact, gradients=gradients)
    return name_node(out, "NativeGroupNormBackward0", input, graph=(input, weight, bias))


def _group_norm_as_aten(input, num_groups, weight, bias, eps):
    """A float32 group norm's output as torch 2.13's CPU kernel computes it (measured; AVX builds). A channels-last
    input runs its channels-last kernel (``group_norm_channels_last``); any other layout is made contiguous first
    (torch's ``X.contiguous()``) for the contiguous one: each group's mean and variance by RowwiseMoments
    (``float32_sums.row_moments``), rstd = 1 / sqrt(var + eps) in double, then ``(x - mean) * rstd`` without
    weight and bias, else scale = rstd * weight, bias' = fma(-scale, mean, bias) per channel and fma(x, scale,
    bias'). None elsewhere (the composed formula stands). float64: the contiguous kernel in double (its
    channels-last one is not modelled)."""
    x = input._array
    params = [t for t in (weight, bias) if t is not None]
    if not (float32_math.FUSED_MULTIPLY_ADD and type(x) is np.ndarray and x.dtype in (np.float32, np.float64)
            and x.ndim >= 2 and not input.is_meta  # (meta: shapes only, the composed ops' meta rules give them)
            and x.size and all(type(t._array) is np.ndarray and t.dtype == x.dtype for t in params)):
        return None
    w, b = (None if t is None else t._array for t in (weight, bias))
    if _channels_last.applies(x) and x.dtype == np.float64:
        return None
    if _channels_last.applies(x):
        rows = _channels_last.rows_of(x)
        mean, rstd = _channels_last.statistics(rows, num_groups, eps)
        return _from_rows(_channels_last.output(rows, num_groups, mean, rstd, w, b), x.shape)
    x = np.ascontiguousarray(x)
    mean, rstd = _group_statistics(x, num_groups, eps)
    return _group_norm_values(x, num_groups, mean, rstd, w, b)


def _from_rows(rows, shape):
    """[N, H * W, C] rows back to ``shape`` [N, C, H, W, ...] (a channels-last view of them)."""
    return np.moveaxis(rows.reshape((shape[0],) + shape[2:] + (shape[1],)), -1, 1)


def group_statistics_as_torch(x, num_groups, eps):
    """Each (sample, group)'s float32 mean and rstd ([N * G]) of a float32, bfloat16 or float16 NumPy input as
    torch's kernel for its dtype and layout computes them (native_group_norm's statistics)."""
    sixteen_bit = x.itemsize == 2
    if _channels_last.applies(x):
        return _channels_last.statistics(_channels_last.rows_of(x), num_groups, eps, sixteen_bit)
    if sixteen_bit:
        return group_norm_16bit_statistics(np.ascontiguousarray(x), num_groups, eps)
    return _group_statistics(np.ascontiguousarray(x), num_groups, eps)


def _group_norm_values(x, num_groups, mean, rstd, weight, bias):
    """The kernel's float32 (float64) output from each group's ``mean`` and ``rstd`` ([N * G]) of that dtype:
    ``(x - mean) * rstd`` without weight and bias, else scale = rstd * weight, bias' = fma(-scale, mean, bias) per
    channel and fma(x, scale, bias')."""
    n, c = x.shape[:2]
    dtype, fma = _dtype_and_fma(x)
    per_channel = (n, c) + (1,) * (x.ndim - 2)
    mean, rstd = (np.repeat(v.reshape(n, num_groups), c // num_groups, axis=1).reshape(per_channel)
                  for v in (mean, rstd))
    if weight is None and bias is None:
        return (x - mean) * rstd
    scale = rstd if weight is None else rstd * weight.astype(dtype).reshape((1, c) + (1,) * (x.ndim - 2))
    shift = np.zeros_like(scale) if bias is None else np.broadcast_to(
        bias.astype(dtype).reshape((1, c) + (1,) * (x.ndim - 2)), scale.shape)
    shift = fma(-scale, mean, shift)
    return fma(x, np.broadcast_to(scale, x.shape), np.broadcast_to(shift, x.shape))


def _dtype_and_fma(a):
    """A float32 or float64 kernel's scalar type and its fused multiply-add (float32_math's of that width)."""
    if a.dtype == np.float64:
        return np.float64, float32_math.fused_multiply_add64
    return np.float32, float32_math.fused_multiply_add


def _group_norm_16bit_kernel_runs(input, weight, bias):
    """A bfloat16/float16 NumPy input, its weight and bias all of its dtype or all float32: torch's 16-bit group-norm
    kernel (``GroupNormKernelImplInternal<T, PT>``; a channels-last input its channels-last one)."""
    return (_layer_norm_16bit_kernel_runs(input, weight, bias) and input.ndim >= 2
            and float32_math.FUSED_MULTIPLY_ADD and float32_math.CPU_CAPABILITY != "default")


def group_norm_16bit_statistics(x, num_groups, eps):
    """Each (sample, group)'s float32 mean and rstd of a 16-bit C-contiguous array [N, C, ...] as torch's 16-bit
    kernel computes them: RowwiseMoments' 16-bit form, rstd = 1 / sqrt(var + eps) in double."""
    rows = x.astype(np.float32).reshape(x.shape[0] * num_groups, -1)
    mean, variance = float32_sums.sixteen_bit_row_moments(rows, x.dtype)
    return mean, (1 / np.sqrt(np.maximum(variance, 0).astype(np.float64) + eps)).astype(np.float32)


def _group_norm_16bit_as_torch(input, num_groups, weight, bias, eps):
    """torch's 16-bit group norm: the float32 kernel's output (``_group_norm_values``) from the 16-bit statistics,
    rounded once to the dtype, and a function of (g, needs) for ``KernelGradients``: the float32 kernel's backward
    (``_group_norm_gradients``) from the statistics as the forward saves them (rounded to the dtype, unless the
    parameters are float32) and ds, db summed as its 16-bit ``ComputeInternalGradients`` adds them. A channels-last
    input: the 16-bit forms of the channels-last kernels (``group_norm_channels_last``)."""
    dtype = input.dtype
    w, b = (None if t is None else t._array.astype(np.float32) for t in (weight, bias))
    mixed = any(t is not None and t.dtype == np.float32 for t in (weight, bias))
    fused = mixed or dtype != np.float16  # (float16 parameters and statistics: their conversion stops GCC's fusing)
    if _channels_last.applies(input._array):
        x, shape = _channels_last.rows_of(input._array), input.shape
        mean, rstd = _channels_last.statistics(x, num_groups, eps, sixteen_bit=True)
        values = _from_rows(_channels_last.output(x, num_groups, mean, rstd, w, b, fused_shift=fused), shape)
        values = values.astype(dtype)
    else:
        x16 = np.ascontiguousarray(input._array)
        mean, rstd = group_norm_16bit_statistics(x16, num_groups, eps)
        x, shape = x16.astype(np.float32), None
        values = _group_norm_values(x, num_groups, mean, rstd, w, b).astype(dtype)
    if not mixed:
        mean, rstd = _round(mean, dtype), _round(rstd, dtype)
    gamma = np.ones(input.shape[1], np.float32) if w is None else w
    param_dtype = np.float32 if mixed else dtype

    def gradients(g16, needs):
        if shape is not None:  # (channels-last: x is the kernel's rows)
            gx, gw, gb = _channels_last_gradients(g16, x, shape, num_groups, mean, rstd, gamma, needs, fused)
        else:
            g = np.ascontiguousarray(g16).astype(np.float32)
            gx, gw, gb = _group_norm_gradients(g, x, num_groups, mean, rstd, gamma, needs, _sixteen_bit_ds_db(dtype),
                                               fuse_x=dtype == np.float16)
        return (None if gx is None else gx.astype(dtype), None if gw is None else gw.astype(param_dtype),
                None if gb is None else gb.astype(param_dtype))
    return values, gradients


def _group_statistics(x, num_groups, eps):
    """Each (sample, group)'s mean and rstd = 1 / sqrt(var + eps) (in double) as torch's kernel keeps them."""
    mean, var = float32_sums.row_moments(x.reshape(x.shape[0] * num_groups, -1))
    return mean, (1 / np.sqrt(var.astype(np.float64) + eps)).astype(x.dtype)


def _group_norm_backward_as_aten(input, num_groups, weight, eps):
    """torch 2.13's GroupNormBackwardKernelImplInternal for a float32 input (measured; its AVX2 build, 8 floats a
    vector, which the AVX-512 one runs; a channels-last input: its channels-last kernel, ``_channels_last_backward``;
    any other layout made contiguous first): per (sample, channel) ds = sum(dy * x) and db = sum(dy)
    (``fastmath.lane_sum``); dgamma = fma(fma(-db, mean, ds), rstd, dgamma) and dbeta += db, sample after sample;
    dx = fma(c1, dy, c2 * x) + c3 per group (``_group_input_coefficients``). A function of (g, needs) for
    ``KernelGradients``, or None where the kernel is another. (On one thread torch's build adds the channels after
    a group's last whole vector otherwise where 4, 5 or 7 are left: dx differs there in the last bits, pinned in
    tests/test_cnn_grads_r19.py; 2 and more threads measured bit for bit.)"""
    x = input._array
    if float32_math.CPU_CAPABILITY == "default" or x.size == 0 or (x.dtype == np.float64 and _channels_last.applies(x)):
        return None
    gamma = np.ones(x.shape[1], x.dtype) if weight is None else weight._array
    if _channels_last.applies(x):
        return _channels_last_backward(x, num_groups, gamma, eps)
    x = np.ascontiguousarray(x)
    mean, rstd = _group_statistics(x, num_groups, eps)
    return lambda g, needs: _group_norm_gradients(g, x, num_groups, mean, rstd, gamma, needs, _float32_ds_db)


def _channels_last_backward(x, num_groups, gamma, eps):
    """(g, needs) -> (gx, gw, gb) of torch's float32 channels-last backward kernel (``group_norm_channels_last``)."""
    rows = _channels_last.rows_of(x)
    mean, rstd = _channels_last.statistics(rows, num_groups, eps)
    return lambda g, needs: _channels_last_gradients(g, rows, x.shape, num_groups, mean, rstd, gamma, needs)


def _channels_last_gradients(g, rows, shape, num_groups, mean, rstd, gamma, needs, fused=None):
    """(gx, gw, gb) of the channels-last backward kernel from the input's ``rows`` (of ``shape``) and the statistics
    as the forward saved them; dgamma and dbeta are the contiguous kernel's from its ds and db. ``fused``: None for a
    float32 input, else whether its 16-bit form's sums fuse (``group_norm_channels_last.gradients``)."""
    dy = _channels_last.rows_of(np.asarray(g))
    dx, ds, db = _channels_last.gradients(dy, rows, num_groups, mean, rstd, gamma, needs, fused is not None,
                                          fused is not False)
    n = shape[0]
    gw, gb = _gamma_beta_gradients(ds, db, mean.reshape(n, num_groups), rstd.reshape(n, num_groups), needs)
    return None if dx is None else _from_rows(dx, shape), gw, gb


def _float32_ds_db(dy, rows):
    """Each (sample, channel)'s ds = sum(dy * x) and db = sum(dy) as the float32 (float64) kernel adds them (an AVX2
    vector's lanes: 8 floats, 4 doubles; float64's partial last vector of products fused into the lanes, measured:
    unfused, 16 of 300 dgamma an ulp off)."""
    lanes = 32 // dy.itemsize
    return fastmath.lane_sum(dy, rows, fuse_tail=dy.dtype == np.float64, lanes=lanes), fastmath.lane_sum(dy, lanes=lanes)


def _sixteen_bit_ds_db(dtype):
    """ds, db as the 16-bit ``ComputeInternalGradients`` adds them: each 16-bit vector of 16 read as two float vectors
    of 8, both added into the same 8 lanes (ds by fused multiply-adds), the lanes from 0 in order, then the elements
    after the last whole 16 (ds fused for float16, not for bfloat16: measured, as its other scalar loops)."""
    fma = float32_math.fused_multiply_add

    def sums(dy, rows):
        width = dy.shape[1]
        whole = width - width % 16
        ds_lanes, db_lanes = np.zeros((len(dy), 8), np.float32), np.zeros((len(dy), 8), np.float32)
        for j in range(0, whole, 8):
            ds_lanes = fma(np.ascontiguousarray(dy[:, j:j + 8]), np.ascontiguousarray(rows[:, j:j + 8]), ds_lanes)
            db_lanes = db_lanes + dy[:, j:j + 8]
        ds, db = np.zeros(len(dy), np.float32), np.zeros(len(dy), np.float32)
        for lane in range(8):  # (std::accumulate: from 0, lane after lane)
            ds, db = ds + ds_lanes[:, lane], db + db_lanes[:, lane]
        for j in range(whole, width):
            ds = fma(dy[:, j], rows[:, j], ds) if dtype == np.float16 else ds + dy[:, j] * rows[:, j]
            db = db + dy[:, j]
        return ds, db
    return sums


def _group_norm_gradients(g, x, num_groups, mean, rstd, gamma, needs, ds_db, fuse_x=False):
    """(gx, gw, gb) of the kernel from float32 ``g`` and ``x`` [N, C, ...], each group's ``mean`` and ``rstd``
    ([N * G]) and float32 ``gamma`` (float64: all of them float64); ``ds_db(dy, rows)``: the per-(sample, channel)
    sums; ``fuse_x``: dx's multiply-add fuses c2 * x (else c1 * dy)."""
    n, c = x.shape[:2]
    dtype, fma = _dtype_and_fma(rstd)
    size = x.size // (n * c)
    mean, rstd = mean.reshape(n, num_groups), rstd.reshape(n, num_groups)
    dy, rows = np.ascontiguousarray(g).reshape(n * c, size), x.reshape(n * c, size)
    ds, db = (v.reshape(n, c) for v in ds_db(dy, rows))
    per_channel = lambda v: np.repeat(v, c // num_groups, axis=1)  # noqa: E731  ([n, G] -> [n, C])
    gx = None
    if needs[0]:
        c1, c2, c3 = _group_input_coefficients(ds, db, mean, rstd, gamma, size)
        spread = lambda v: v.reshape(n, c, 1)  # noqa: E731
        a, b = spread(c1) * np.ones(size, dtype), spread(per_channel(c2)) * np.ones(size, dtype)
        dy3, x3 = dy.reshape(n, c, size), rows.reshape(n, c, size)
        if fuse_x:  # c1 dy + c2 x: GCC fuses the one product or the other (float16's kernel: c2 x, measured)
            gx = fma(b, x3, a * dy3)
        else:
            gx = fma(a, dy3, b * x3)
        gx = (gx + spread(per_channel(c3))).reshape(x.shape)
    return (gx,) + _gamma_beta_gradients(ds, db, mean, rstd, needs)


def _gamma_beta_gradients(ds, db, mean, rstd, needs):
    """GammaBackward and BetaBackward from ds, db [N, C] and each group's mean and rstd [N, G]: dgamma =
    fma(fma(-db, mean, ds), rstd, dgamma) and dbeta += db, sample after sample (None where not ``needs``)."""
    n, c = ds.shape
    dtype, fma = _dtype_and_fma(rstd)
    per_channel = lambda v: np.repeat(v, c // v.shape[1], axis=1)  # noqa: E731  ([n, G] -> [n, C])
    gw = gb = None
    if needs[1]:
        gw = np.zeros(c, dtype)
        for i in range(n):  # (sample after sample, as its GammaBetaBackward)
            centred = fma(-db[i], per_channel(mean)[i], ds[i])
            gw = fma(centred, per_channel(rstd)[i], gw)
    if needs[2]:
        gb = np.zeros(c, dtype)
        for i in range(n):
            gb = gb + db[i]
    return gw, gb


def _group_input_coefficients(ds, db, mean, rstd, gamma, size):
    """ApplyInputGradientsChannelsFirst's per-group coefficients, dx = c1 * dy + c2 * x + c3: the group's
    sums of ds * gamma and db * gamma (CalcDsDb: 8 lanes by fused multiply-adds, the lanes added from 0, then
    the channels after the last whole vector fused one by one), c2 = fma(db_val, mean, -ds_val) * rstd^3 * s and
    c3 = fma(-(db_val * rstd), s, -(c2 * mean)) with s = 1 / (D * HxW); c1 = rstd * gamma per channel. (float64:
    vectors of 4 doubles.)"""
    n, c = ds.shape
    groups = mean.shape[1]
    d = c // groups
    dtype, fma = _dtype_and_fma(rstd)
    lanes = 32 // rstd.itemsize
    ds, db, gamma = ds.reshape(n, groups, d), db.reshape(n, groups, d), gamma.reshape(groups, d)
    inner = d // lanes * lanes
    ds_lanes, db_lanes = np.zeros((n, groups, lanes), dtype), np.zeros((n, groups, lanes), dtype)
    for j in range(0, inner, lanes):
        ds_lanes = fma(ds[..., j:j + lanes], np.broadcast_to(gamma[:, j:j + lanes], ds_lanes.shape), ds_lanes)
        db_lanes = fma(db[..., j:j + lanes], np.broadcast_to(gamma[:, j:j + lanes], db_lanes.shape), db_lanes)
    ds_val, db_val = np.zeros((n, groups), dtype), np.zeros((n, groups), dtype)
    for k in range(lanes):  # (std::accumulate: from 0, lane after lane)
        ds_val, db_val = ds_val + ds_lanes[..., k], db_val + db_lanes[..., k]
    for j in range(inner, d):
        ds_val = fma(ds[..., j], np.broadcast_to(gamma[:, j], ds_val.shape), ds_val)
        db_val = fma(db[..., j], np.broadcast_to(gamma[:, j], db_val.shape), db_val)
    s = dtype(1) / dtype(d * size)
    c2 = fma(db_val, mean, -ds_val) * rstd * rstd * rstd * s
    c3 = fma(-(db_val * rstd), np.broadcast_to(s, c2.shape), -(c2 * mean))
    c1 = (rstd[..., None] * gamma).reshape(n, c)
    return c1, c2, c3


@float32_inside
def _group_norm(input, num_groups, weight, bias, eps):
    if input.ndim < 2:
        raise RuntimeError(f"group_norm: expected an input [N, C, ...], got shape {tuple(input.shape)}")
    _floating_only("group_norm", input)
    n, c = input.shape[:2]
    if c % num_groups:
        raise RuntimeError(f"Expected number of channels in input to be divisible by num_groups, but "
                           f"got input of shape {list(input.shape)} and num_groups={num_groups}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.ndim != 1 or t.numel() != c):
            raise RuntimeError(f"Expected {name} to be a vector of size equal to the number of channels in input, "
                               f"but got {name} of shape {list(t.shape)} and input of shape {list(input.shape)}")
    if n * (c // num_groups) * math.prod(input.shape[2:]) == 1:  # torch's _verify_batch_size, in eval too
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{[n * c // num_groups, num_groups] + list(input.shape[2:])}")
    grouped = input.reshape(n, num_groups, c // num_groups * math.prod(input.shape[2:]))  # (no -1: n may be 0)
    mean = grouped.mean(-1, keepdim=True)
    var = grouped.var(-1, keepdim=True, correction=0)
    out = ((grouped - mean) * (var + eps).rsqrt()).reshape(input.shape)
    if weight is not None:
        out = out * _per_channel(weight, input.ndim)
    if bias is not None:
        out = out + _per_channel(bias, input.ndim)
    return out
