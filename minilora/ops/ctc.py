"""``F.ctc_loss``: Connectionist Temporal Classification (Graves et al. 2006), the loss of speech and
handwriting recognisers whose outputs are not aligned with their labels.

The loss of one sample is ``-log p(target | log_probs)``, summed over every alignment of the target
with the T time steps (the target with a ``blank`` between and around its labels, each symbol held
for one or more steps; a label repeated in the target needs a blank between its copies). The sum is
the forward (alpha) recursion in log space, over all samples of the batch at once; the backward pass
runs the beta recursion the same way.

Gradient: torch's ``ctc_loss`` returns ``exp(log_probs) - exp(log(sum alpha beta) + nll - log_probs)``,
which is the gradient with respect to the *logits* behind a ``log_softmax`` (the derivative through
``log_softmax`` of the true one, since the class probabilities sum to 1); it is what
``log_probs.grad`` shows when ``log_probs`` is a leaf, as in torch's docs. Composed with
``log_softmax``, as CTC is always used, it is the exact gradient (gradcheck passes there, as torch's).
"""
import numpy as np

from .. import amp as _amp
from ..device import xp_of
from ..dtypes import is_floating, torch_name
from ..float32_math import c_function, c_function64
from ..tensor import Function, Tensor, name_node, no_forward_formula, saves_as_torch

__all__ = ["ctc_loss"]


@_amp.autocasts
def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    """``log_probs`` [T, N, C] (log-softmax outputs; unbatched [T, C]), ``targets`` [N, S] padded or
    1-D (all targets one after another), ``input_lengths`` / ``target_lengths`` [N] (tensors or
    sequences of ints). ``reduction='mean'`` divides each loss by its target length, then averages."""
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    no_forward_formula("_ctc_loss", log_probs)
    if log_probs.dtype not in (np.float32, np.float64):
        raise NotImplementedError(f"\"ctc_loss_cpu\" not implemented for '{torch_name(log_probs.dtype)}'")
    if log_probs.numel() == 0:
        raise RuntimeError("log_probs tensor must not be empty")
    batched = log_probs.ndim == 3
    input_lengths, target_lengths = _lengths(input_lengths), _lengths(target_lengths)
    given = log_probs
    if not batched:
        log_probs = log_probs.unsqueeze(1)
        targets = targets.unsqueeze(0) if targets.ndim == 1 else targets
    labels = _labelled(log_probs, targets, input_lengths, target_lengths, blank)
    losses = CTCLoss.apply(log_probs, labels=labels, input_lengths=input_lengths, target_lengths=target_lengths,
                           blank=blank, zero_infinity=zero_infinity)
    saves_as_torch(losses, given, targets, losses)  # (torch's _ctc_loss node keeps them: an in-place change
    # of any of them before backward is its error)
    name_node(losses, "CtcLossBackward0")
    if zero_infinity:  # (the gradient of those is zero already)
        losses = losses.masked_fill(losses == float("inf"), 0.0)
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        lengths = Tensor(np.maximum(target_lengths, 1), dtype=losses.dtype, device=losses.device)
        return (losses / lengths).mean()
    return losses if batched else losses.squeeze(0)


def _lengths(lengths):
    if isinstance(lengths, Tensor):
        if is_floating(lengths.dtype):
            raise RuntimeError(f"ctc_loss: expected integer lengths, got {lengths.dtype}")
        lengths = lengths.tolist()
    return np.atleast_1d(np.asarray(lengths, dtype=np.int64))


def _labelled(log_probs, targets, input_lengths, target_lengths, blank):
    """Each sample's target with blanks between and around its labels: [N, 2 S + 1] (padded with blanks
    past ``2 * target_length``), after torch's checks."""
    steps, n, classes = log_probs.shape
    if len(input_lengths) != n:
        raise RuntimeError("input_lengths must be of size batch_size")
    if len(target_lengths) != n:
        raise RuntimeError("target_lengths must be of size batch_size")
    if not 0 <= blank < classes:
        raise RuntimeError("blank must be in label range")
    if n and input_lengths.max() > steps:
        raise RuntimeError(f"Expected input_lengths to have value at most {steps}, but got value "
                           f"{input_lengths.max()} (while checking arguments for ctc_loss_allocate_outputs)")
    if (input_lengths < 0).any() or (target_lengths < 0).any():
        raise RuntimeError("ctc_loss: lengths must be non-negative")
    values = np.asarray(targets.detach().cpu().numpy()).astype(np.int64)
    longest = int(target_lengths.max()) if n else 0
    if values.ndim == 2:
        if values.shape[1] < longest:
            raise RuntimeError(f"Expected tensor to have size at least {longest} at dimension 1, but got size "
                               f"{values.shape[1]} for argument #2 'targets' (while checking arguments for "
                               f"ctc_loss_allocate_outputs)")
        rows = [values[b, :length] for b, length in enumerate(target_lengths)]
    else:
        if values.shape[0] < target_lengths.sum():
            raise RuntimeError(f"Expected tensor to have size at least {target_lengths.sum()} at dimension 0, but "
                               f"got size {values.shape[0]} for argument #2 'targets'")
        ends = np.cumsum(target_lengths)
        rows = [values[end - length:end] for end, length in zip(ends, target_lengths)]
    labels = np.full((n, 2 * longest + 1), blank, dtype=np.int64)
    for b, row in enumerate(rows):
        labels[b, 1:2 * len(row):2] = row
    return labels


class CTCLoss(Function):
    """Per-sample ``-log p(target)`` [N] by the alpha recursion; backward by the beta recursion and
    torch's gradient formula (see the module's note)."""

    @staticmethod
    def forward(ctx, log_probs, labels, input_lengths, target_lengths, blank, zero_infinity):
        xp = xp_of(log_probs)
        lp = np.asarray(log_probs if xp is np else log_probs.get())
        ctx.geometry = (lp, labels, input_lengths, target_lengths, zero_infinity)
        ctx.alpha = _alpha(lp, labels, input_lengths, target_lengths)
        ctx.nll = _neg_log_likelihood(ctx.alpha, input_lengths, target_lengths)
        return xp.asarray(ctx.nll)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        lp, labels, input_lengths, target_lengths, zero_infinity = ctx.geometry
        beta = _beta(lp, labels, input_lengths, target_lengths)
        steps, n, classes = lp.shape
        with np.errstate(invalid="ignore", over="ignore"):
            log_alpha_beta = _by_class(ctx.alpha + beta, labels, 2 * target_lengths, classes)  # [T, N, C]
            nll = ctx.nll.reshape(1, n, 1)
            grad = (_exp(lp) - _exp(log_alpha_beta + nll - lp)) * np.asarray(g if xp is np else g.get())[:, None]
        grad[np.arange(steps)[:, None] >= input_lengths[None, :]] = 0  # (past each sample's end)
        if zero_infinity:
            grad[:, ctx.nll == np.inf] = 0
        return xp.asarray(grad.astype(lp.dtype))


def _exp(x):
    """The C library's exp, which ATen's CTC kernel calls (``std::exp``): NumPy's own float32 exp differs from
    glibc's in the last bit for ~40% of elements, and the gradient's ``exp(lp) - exp(...)`` cancels, so one
    bit there is thousands of ulps of a small gradient."""
    return c_function("expf", x) if x.dtype == np.float32 else c_function64("exp", x)


def _log(x):
    """The C library's log (``std::log``), as ``_exp``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return c_function("logf", x) if x.dtype == np.float32 else c_function64("log", x)


def _logsumexp3(a, b, c):
    """log(exp(a) + exp(b) + exp(c)) as torch's kernel writes it (shifted by the largest; 0 if all -inf)."""
    top = np.maximum(np.maximum(a, b), c)
    top = np.where(top == -np.inf, 0, top)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _log(_exp(a - top) + _exp(b - top) + _exp(c - top)) + top


def _shifted(a, by, fill=-np.inf):
    """``a`` [N, L] moved ``by`` places along L (positive: to higher indices), ``fill`` coming in."""
    out = np.full_like(a, fill)
    if by > 0:
        out[:, by:] = a[:, :-by]
    else:
        out[:, :by] = a[:, -by:]
    return out


def _alpha(lp, labels, input_lengths, target_lengths):
    """log alpha [T, N, 2 S + 1]: the log-probability of the alignments of the labels up to s ending at t."""
    steps, n, _ = lp.shape
    width = labels.shape[1]
    emit = np.take_along_axis(lp, np.broadcast_to(labels, (steps, n, width)), axis=2)  # [T, N, L]
    skip = np.zeros((n, width), dtype=bool)  # s may come from s - 2: a label unlike the one before it
    skip[:, 2:] = labels[:, 2:] != labels[:, :-2]
    beyond = np.arange(width)[None, :] > 2 * target_lengths[:, None]
    alpha = np.full((steps, n, width), -np.inf, dtype=lp.dtype)
    if steps == 0:
        return alpha
    alpha[0, :, 0] = emit[0, :, 0]
    has_label = target_lengths > 0
    alpha[0, has_label, 1] = emit[0, has_label, 1]
    for t in range(1, steps):
        prev = alpha[t - 1]
        step = _logsumexp3(prev, _shifted(prev, 1), np.where(skip, _shifted(prev, 2), -np.inf)) + emit[t]
        alpha[t] = np.where(beyond, -np.inf, step)
    return alpha


def _neg_log_likelihood(alpha, input_lengths, target_lengths):
    n = alpha.shape[1]
    nll = np.empty(n, dtype=alpha.dtype)
    for b in range(n):
        t, s = input_lengths[b] - 1, 2 * target_lengths[b]
        if t < 0:  # (no time steps: only an empty target has an alignment)
            nll[b] = 0 if s == 0 else np.inf
            continue
        last, before = alpha[t, b, s], (alpha[t, b, s - 1] if s else -np.inf)
        top = max(last, before)
        top = 0 if top == -np.inf else top
        pair = np.array([last - top, before - top], alpha.dtype)
        nll[b] = -(_log(_exp(pair).sum(keepdims=True))[0] + top)
    return nll


def _beta(lp, labels, input_lengths, target_lengths):
    """log beta [T, N, 2 S + 1]: the log-probability of the alignments of the labels from s on, starting
    at t (each sample from its own last step backwards)."""
    steps, n, _ = lp.shape
    width = labels.shape[1]
    emit = np.take_along_axis(lp, np.broadcast_to(labels, (steps, n, width)), axis=2)
    skip = np.zeros((n, width), dtype=bool)  # s may go on to s + 2
    skip[:, :-2] = labels[:, :-2] != labels[:, 2:]
    ends = 2 * target_lengths
    beyond = np.arange(width)[None, :] > ends[:, None]
    beta = np.full((steps, n, width), -np.inf, dtype=lp.dtype)
    rows = np.arange(n)
    for t in range(steps - 1, -1, -1):
        inside = (t < input_lengths - 1)[:, None]
        if t + 1 < steps:
            nxt = beta[t + 1]
            step = _logsumexp3(nxt, _shifted(nxt, -1), np.where(skip, _shifted(nxt, -2), -np.inf)) + emit[t]
            beta[t] = np.where(inside & ~beyond, step, -np.inf)
        last = input_lengths - 1 == t
        beta[t, rows[last], ends[last]] = emit[t, rows[last], ends[last]]
        labelled = last & (target_lengths > 0)
        beta[t, rows[labelled], ends[labelled] - 1] = emit[t, rows[labelled], ends[labelled] - 1]
    return beta


def _by_class(log_values, labels, ends, classes):
    """log of the sum of ``exp(log_values)`` [T, N, L] over the positions s <= ``ends`` [N] of each class:
    [T, N, C], -inf where none. Added as ATen's kernel adds them, the last position first, each one a two-term
    log-add shifted by the larger: another order (all at once, shifted by the largest) rounds otherwise."""
    steps, n, width = log_values.shape
    sums = np.full((steps, n, classes), -np.inf, dtype=log_values.dtype)
    for s in range(width - 1, -1, -1):
        rows = np.flatnonzero(s <= ends)
        if rows.size:
            places = (slice(None), rows, labels[rows, s])
            sums[places] = _log_add(sums[places], log_values[:, rows, s])
    return sums


def _log_add(total, value):
    """ATen's ``lcab = log(exp(lcab - max) + exp(value - max)) + max``, ``value`` itself while lcab is -inf."""
    top = np.maximum(total, value)
    with np.errstate(invalid="ignore"):
        added = _log(_exp(total - top) + _exp(value - top)) + top
    return np.where(total == -np.inf, value, added)
