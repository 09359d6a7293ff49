"""Neural-network ops with hand-derived, fused backward passes.

Each is one node in the graph instead of a dozen small ones: less memory (one saved array instead
of every intermediate) and fewer Python calls. The derivations are in the docstrings.
"""
import math

import numpy as np

from .. import parallel
from ..device import xp_of
from ..random import fresh_seed
from ..tensor import Function, Tensor
from .elementwise import _silu_backward_block, _silu_block

__all__ = ["embedding", "cross_entropy", "dropout", "rms_norm", "layer_norm", "rotary_embedding",
           "rotate_half", "scaled_dot_product_attention", "swiglu"]


class Embedding(Function):
    """``weight[ids]``; backward scatter-adds each row's gradient into the rows it came from.

    ``padding_idx`` (as in ``torch.nn.functional.embedding``): that row gets no gradient, so padding
    tokens never move it."""

    @staticmethod
    def forward(ctx, ids, weight, padding_idx=None):
        if ids.dtype.kind not in "iu":
            raise TypeError(f"embedding: ids must be integers, got {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= weight.shape[0]):
            raise IndexError(f"embedding: ids must lie in [0, {weight.shape[0]}), got values from "
                             f"{int(ids.min())} to {int(ids.max())}")
        ctx.ids, ctx.weight_shape, ctx.padding_idx = ids, weight.shape, padding_idx
        return weight[ids]

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        ids, g2 = ctx.ids.reshape(-1), g.reshape(-1, ctx.weight_shape[1])
        grad = xp.zeros(ctx.weight_shape, dtype=g.dtype)
        if ctx.padding_idx is not None:  # padding positions contribute nothing
            keep = ids != ctx.padding_idx
            ids, g2 = ids[keep], g2[keep]
        if xp is not np:
            xp.add.at(grad, ids, g2)
            return None, grad
        # np.add.at(grad, ids, g2) says it plainly but goes row by row; instead sort the rows by id
        # so that equal ids sit together, and sum each run of equal ids in one reduceat.
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        run_starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
        if len(ids):
            grad[sorted_ids[run_starts]] = np.add.reduceat(g2[order], run_starts, axis=0)
        return None, grad


class CrossEntropy(Function):
    """Mean of ``-log softmax(logits)[target]`` over targets != ``ignore_index``.

    Fused: forward keeps only the softmax probabilities; backward is ``(p - onehot) / n_valid``.
    """

    @staticmethod
    def forward(ctx, logits, targets, ignore_index=-100, reduction="mean"):
        xp = xp_of(logits)
        if logits.ndim != 2 or targets.shape != logits.shape[:1]:
            raise ValueError(f"cross_entropy: expected logits [N, C] and targets [N], got "
                             f"{logits.shape} and {targets.shape}")
        if targets.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: targets must be class indices (integers), got {targets.dtype}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        valid = targets != ignore_index
        safe_targets = xp.where(valid, targets, 0)
        if safe_targets.size and (safe_targets.min() < 0 or safe_targets.max() >= logits.shape[1]):
            raise IndexError(f"cross_entropy: targets must lie in [0, {logits.shape[1]}) or equal "
                             f"ignore_index={ignore_index}")
        probs, losses = xp.empty_like(logits), xp.empty(logits.shape[0], logits.dtype)
        parallel.rows(_cross_entropy_rows, logits, safe_targets, valid, probs, losses)
        ctx.probs, ctx.targets, ctx.valid, ctx.reduction = probs, safe_targets, valid, reduction
        if reduction == "none":
            return losses
        # PyTorch divides by the number of non-ignored targets (0/0 = nan when all are ignored).
        ctx.divisor = int(valid.sum()) if reduction == "mean" else 1
        return losses.sum() / logits.dtype.type(ctx.divisor)

    @staticmethod
    def backward(ctx, g):
        # EXERCISE 2.5: the logits' gradient from ctx.probs: 0 for ignored targets; 'mean' divides by ctx.divisor
        # BEGIN SOLUTION
        if ctx.reduction == "none":
            scale = (g * ctx.valid)[:, None]
        else:
            scale = (g / ctx.divisor) * ctx.valid[:, None]
        scale = scale.astype(ctx.probs.dtype, copy=False)

        def rows(probs, targets, scale, grad):  # one block of rows (rows are independent)
            grad[...] = probs
            grad[xp_of(grad).arange(len(grad)), targets] -= 1  # p - onehot(target)
            grad *= scale

        grad = xp_of(g).empty_like(ctx.probs)
        parallel.rows(rows, ctx.probs, ctx.targets, scale, grad)
        return grad, None
        # END SOLUTION


class Dropout(Function):
    """Zero each element with probability ``p``, scale the rest by ``1/(1-p)`` (inverted dropout)."""

    @staticmethod
    def forward(ctx, a, p, seed):
        xp = xp_of(a)
        keep = np.random.default_rng(seed).random(a.shape) >= p
        scale = a.dtype.type(1.0 / (1.0 - p) if p < 1 else 0.0)  # p = 1 drops everything, as in PyTorch
        ctx.mask = xp.asarray(keep) * scale
        return a * ctx.mask

    @staticmethod
    def backward(ctx, g):
        return g * ctx.mask


class SwiGLU(Function):
    """``silu(gate) * up``, Llama's gated MLP activation, as one node (Silu then Mul would be two,
    and would keep one more [rows, intermediate] array alive until backward).

    With ``s = sigmoid(gate)``: ``d up = g * gate * s`` and ``d gate = g * up * s * (1 + gate * (1 - s))``.
    """

    @staticmethod
    def forward(ctx, gate, up):
        if gate.shape != up.shape:
            raise ValueError(f"swiglu: gate {gate.shape} and up {up.shape} must have the same shape")
        xp = xp_of(gate)
        s, out = xp.empty_like(gate), xp.empty_like(gate)
        parallel.rows(_swiglu_block, gate.reshape(-1), up.reshape(-1), s.reshape(-1),
                      out.reshape(-1), work_per_row=1)
        ctx.gate, ctx.up, ctx.s = gate, up, s
        return out

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        dgate, dup = xp.empty_like(g), xp.empty_like(g) if ctx.needs_input_grad[1] else None
        parallel.rows(_swiglu_backward_block, g.reshape(-1), ctx.gate.reshape(-1),
                      ctx.up.reshape(-1), ctx.s.reshape(-1), dgate.reshape(-1),
                      None if dup is None else dup.reshape(-1), work_per_row=1)
        return dgate, dup


def _swiglu_block(gate, up, s, out):
    _silu_block(gate, s, out)  # s = sigmoid(gate), out = silu(gate)
    out *= up


def _swiglu_backward_block(g, gate, up, s, dgate, dup):
    if dup is not None:
        xp_of(g).multiply(gate, s, out=dup)
        dup *= g
    _silu_backward_block(g, gate, s, dgate)  # g * silu'(gate)
    dgate *= up


def _cross_entropy_rows(logits, targets, valid, probs, losses):
    """Softmax probabilities and losses of a block of rows (a numerically stable log-softmax)."""
    xp = xp_of(logits)
    shifted = probs  # computed in place: shifted logits -> exp -> probabilities
    xp.subtract(logits, logits.max(axis=1, keepdims=True), out=shifted)
    target_logit = shifted[xp.arange(len(shifted)), targets]
    xp.exp(shifted, out=probs)
    sum_exp = probs.sum(axis=1, keepdims=True)
    probs /= sum_exp
    losses[:] = (xp.log(sum_exp[:, 0]) - target_logit) * valid


class RMSNorm(Function):
    """``y = w * x / rms(x)`` with ``rms(x) = sqrt(mean(x^2) + eps)`` over the last axis.

    With ``r = 1/rms``: ``dx = r * (gw - x * r^2 * mean(gw * x))`` where ``gw = g * w``;
    ``dw = sum over rows of g * x * r``. Rows are independent: blocks of them run in parallel.
    """

    @staticmethod
    def forward(ctx, x, weight, eps=1e-6):
        xp = xp_of(x)
        x2 = _rows(x)
        normed, r, out = xp.empty_like(x2), xp.empty((len(x2), 1), x.dtype), xp.empty_like(x2)
        parallel.rows(lambda *blocks: _rms_norm_rows(*blocks, weight, x.dtype.type(eps)),
                      x2, normed, r, out)
        ctx.normed, ctx.r, ctx.weight = normed, r, weight
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        normed, r, w = ctx.normed, ctx.r, ctx.weight
        g2 = _rows(g)
        gx = xp_of(g).empty_like(g2)
        parallel.rows(lambda *blocks: _rms_norm_backward_rows(*blocks, w), g2, normed, r, gx)
        gweight = None
        if w is not None and ctx.needs_input_grad[1]:
            gweight = _column_sum(g2, normed)
        return gx.reshape(g.shape), gweight


def _rms_norm_rows(x, normed, r, out, weight, eps):
    """RMSNorm of a block of rows ``x`` [rows, d]: fills ``r`` (1/rms, [rows, 1]), ``normed``, ``out``."""
    xp = xp_of(x)
    # EXERCISE 2.1: fill r = 1/sqrt(mean(x^2) + eps) per row, normed = x * r and out = normed * weight (or normed)
    # BEGIN SOLUTION
    r[:, 0] = 1 / xp.sqrt(_row_mean(x, x) + eps)
    xp.multiply(x, r, out=normed)
    if weight is None:
        out[...] = normed
    else:
        xp.multiply(normed, weight, out=out)
    # END SOLUTION


def _rms_norm_backward_rows(g, normed, r, gx, weight):
    """``gx`` for a block of rows, from the saved ``normed`` and ``r``."""
    # EXERCISE 2.2: fill gx = r * (gw - normed * mean(gw * normed)) per row, with gw = g * weight (or g)
    # BEGIN SOLUTION
    gw = g * weight if weight is not None else g
    xp_of(g).multiply(normed, -_row_mean(gw, normed)[:, None], out=gx)
    gx += gw
    gx *= r
    # END SOLUTION


class LayerNorm(Function):
    """``y = w * (x - mean) / sqrt(var + eps) + b`` over the last axis (biased variance).

    With ``n`` the normalised input, ``r = 1/sqrt(var + eps)`` and ``gw = g * w``:
    ``dx = r * (gw - mean(gw) - n * mean(gw * n))``, ``dw = sum over rows of g * n``, ``db = sum of g``.
    Work is on [rows, width] views, blocks of rows in parallel; the means over a row are BLAS
    matrix-vector products or one ``einsum``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-5):
        xp = xp_of(x)
        x2 = _rows(x)
        normed, r, out = xp.empty_like(x2), xp.empty(len(x2), x.dtype), xp.empty_like(x2)
        parallel.rows(lambda *blocks: _layer_norm_rows(*blocks, weight, bias, eps), x2, normed, r, out)
        ctx.normed, ctx.r, ctx.weight = normed, r, weight
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        normed, r, w = ctx.normed, ctx.r, ctx.weight
        nx, nw, nb = ctx.needs_input_grad
        g2 = _rows(g)
        gx = None
        if nx:
            gx = xp_of(g).empty_like(g2)
            parallel.rows(lambda *blocks: _layer_norm_backward_rows(*blocks, w), g2, normed, r, gx)
            gx = gx.reshape(g.shape)
        gweight = _column_sum(g2, normed) if nw else None
        gbias = _column_sum(g2) if nb else None
        return gx, gweight, gbias


def _layer_norm_rows(x, normed, r, out, weight, bias, eps):
    xp = xp_of(x)
    xp.subtract(x, _row_mean(x)[:, None], out=normed)
    r[:] = 1 / xp.sqrt(_row_mean(normed, normed) + eps)  # Python eps: stays float32 (NEP 50)
    normed *= r[:, None]
    if weight is not None:
        xp.multiply(normed, weight, out=out)
    else:
        out[...] = normed
    if bias is not None:
        out += bias


def _layer_norm_backward_rows(g, normed, r, gx, weight):
    gw = g * weight if weight is not None else g
    xp_of(g).subtract(gw, _row_mean(gw)[:, None], out=gx)
    gx -= normed * _row_mean(gw, normed)[:, None]
    gx *= r[:, None]


def _rows(a):
    """``a`` as a 2-D [rows, last axis] array (a view when ``a`` is contiguous)."""
    return a.reshape(-1, a.shape[-1])


def _row_mean(a, b=None):
    """Mean over each row of a 2-D array (of ``a * b`` when ``b`` is given), without temporaries:
    a BLAS matrix-vector product with a vector of ``1/width``, or one ``einsum``."""
    xp = xp_of(a)
    if b is None:
        return a @ xp.full(a.shape[1], 1 / a.shape[1], dtype=a.dtype)
    if a.size < parallel.MIN_ITEMS:  # a few rows (decoding): einsum's set-up costs more than the temporary
        return (a * b).sum(axis=1) * (1 / a.shape[1])
    return xp.einsum("ij,ij->i", a, b) * (1 / a.shape[1])


def _column_sum(a, b=None):
    """Sum over the rows of a 2-D array (of ``a * b`` when ``b`` is given), without temporaries."""
    xp = xp_of(a)
    if b is None:
        return xp.ones(a.shape[0], dtype=a.dtype) @ a
    return xp.einsum("ij,ij->j", a, b)


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
    Blocks of the batch run in parallel."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        xp = xp_of(x)
        ctx.cos, ctx.sin = _with_batch_axis(cos, x.shape), _with_batch_axis(sin, x.shape)
        out = xp.empty_like(x)  # in x's memory order (see Attention): no copy when it is transposed back
        parallel.rows(_rotate_rows, x, ctx.cos, ctx.sin, out)
        return out

    @staticmethod
    def backward(ctx, g):
        gx = xp_of(g).empty_like(g)
        parallel.rows(_rotate_back_rows, g, ctx.cos, ctx.sin, gx)
        return gx, None, None


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
    """Causal scaled-dot-product attention with grouped-query heads.

    q: [B, Hq, Tq, D], k and v: [B, Hkv, Tk, D] with Hq a multiple of Hkv (GQA). Query i sits at
    position ``Tk - Tq + i`` (so a KV cache works) and sees keys ``j <= Tk - Tq + i``.
    ``mask`` (optional) is added to the scores, broadcastable to [B, Hq, Tq, Tk].

    Forward: S = q k^T * scale + mask, P = softmax(S), O = P v.
    Backward: dv = P^T dO, dP = dO v^T, dS = P * (dP - rowsum(dP * P)), dq = dS k * scale,
    dk = dS^T q * scale. Heads sharing one KV head add their dk, dv. And rowsum(dP * P) equals
    rowsum(dO * O) (FlashAttention's trick): a sum over D numbers per query instead of over Tk.

    Each batch element is independent, so both directions run on blocks of the batch in parallel
    (``minilora.parallel``), each block writing its slice of preallocated outputs.
    """

    @staticmethod
    def forward(ctx, q, k, v, mask=None, causal=True, scale=None):
        xp = xp_of(q)
        b, hq, tq, d = q.shape
        hkv, tk = k.shape[1], k.shape[2]
        if k.shape != v.shape or k.shape[0] != b or k.shape[3] != d or hq % hkv:
            raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} are not "
                             "[B, Hq, Tq, D], [B, Hkv, Tk, D] with Hq a multiple of Hkv")
        scale = q.dtype.type(1 / math.sqrt(d) if scale is None else scale)
        bias = None  # what is added to the scores: -inf above the causal diagonal, plus the mask
        if causal:
            allowed = np.arange(tk)[None, :] <= (tk - tq + np.arange(tq))[:, None]
            bias = xp.asarray(np.where(allowed, 0, -np.inf).astype(q.dtype))
        if mask is not None:
            bias = mask if bias is None else bias + mask
        if bias is not None:  # with the batch axis, so that it splits like q
            bias = _with_batch_axis(bias, (b, hq, tq, tk))
        out, probs = _like(q, hq == hkv), xp.empty((b, hq, tq, tk), q.dtype)
        parallel.rows(lambda *blocks: _attention_forward(*blocks, scale=scale), q, k, v, bias,
                      out, probs, work_per_row=8 * hq * tq * tk)  # ~8 passes over the scores
        ctx.q, ctx.k, ctx.v, ctx.probs, ctx.out, ctx.scale = q, k, v, probs, out, scale
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, probs = ctx.q, ctx.k, ctx.v, ctx.probs
        xp = xp_of(q)
        dq, dk, dv = _like(q, q.shape[1] == k.shape[1]), xp.empty_like(k), xp.empty_like(v)
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
    return a.reshape(a.shape[0], hkv, -1, a.shape[-1])


def _attention_forward(q, k, v, bias, out, probs, scale):
    """Softmax attention of a block of the batch; writes ``out`` and ``probs`` (both [B, Hq, Tq, .])."""
    xp = xp_of(q)
    hkv = k.shape[1]
    scores = probs  # computed in place: scores -> exp -> probabilities
    # (q * scale) k^T: scaling q is half the work of scaling the [Tq, Tk] scores
    xp.matmul(_by_kv_head(q * scale, hkv), k.swapaxes(-1, -2), out=_by_kv_head(scores, hkv))
    if bias is not None:
        scores += bias
    scores -= scores.max(axis=-1, keepdims=True)  # softmax without overflow
    xp.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    xp.matmul(_by_kv_head(probs, hkv), v, out=_by_kv_head(out, hkv))


def _attention_backward(g, q, k, v, probs, out, dq, dk, dv, scale):
    """Gradients of a block of the batch, written into the blocks ``dq``, ``dk``, ``dv``."""
    xp = xp_of(q)
    hkv = k.shape[1]
    # EXERCISE 2.4: dq, dk, dv from the saved probs and output (query heads sharing a KV head sit side by side)
    # BEGIN SOLUTION
    p, g = _by_kv_head(probs, hkv), _by_kv_head(g, hkv)
    xp.matmul(p.swapaxes(-1, -2), g, out=dv)
    ds = g @ v.swapaxes(-1, -2)  # dP, turned into dS in place
    ds -= (g * _by_kv_head(out, hkv)).sum(axis=-1, keepdims=True)  # rowsum(dP * P) = rowsum(dO * O)
    ds *= p
    ds *= scale
    xp.matmul(ds, k, out=_by_kv_head(dq, hkv))
    xp.matmul(ds.swapaxes(-1, -2), _by_kv_head(q, hkv), out=dk)
    # END SOLUTION


# ---- wrappers ------------------------------------------------------------------------------------
def embedding(ids, weight, padding_idx=None):
    """``weight[ids]``, PyTorch's ``F.embedding``: row ``padding_idx`` (if given) gets no gradient."""
    ids = ids.data if isinstance(ids, Tensor) else np.asarray(ids) if isinstance(ids, list) else ids
    return Embedding.apply(ids, weight, padding_idx=_row_index("embedding", padding_idx, weight.shape[0]))


def _row_index(fn, index, rows):
    """``index`` as a row number in [0, rows) (negative counts from the end, as in PyTorch), or None."""
    if index is None:
        return None
    if not -rows <= int(index) < rows:
        raise ValueError(f"{fn}: padding_idx must lie in [-{rows}, {rows}), got {index}")
    return int(index) % rows


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean"):
    """PyTorch's ``F.cross_entropy`` for class-index targets; logits [N, C] (or [..., C])."""
    targets = targets.data if isinstance(targets, Tensor) else targets
    if logits.ndim != 2:  # flatten [B, T, C] / [B, T] as users of language models expect
        logits = logits.reshape(-1, logits.shape[-1])
        targets = targets.reshape(-1)
    return CrossEntropy.apply(logits, targets, ignore_index=ignore_index, reduction=reduction)


def dropout(a, p=0.5, training=True, seed=None):
    """Inverted dropout; ``seed`` fixes the mask (default: drawn from ``minilora.manual_seed``)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0:
        return a
    return Dropout.apply(a, p=p, seed=fresh_seed() if seed is None else seed)


def swiglu(gate, up):
    """``silu(gate) * up`` in one op (the activation of Llama's MLP)."""
    return SwiGLU.apply(gate, up)


def rms_norm(x, weight=None, eps=1e-6):
    return RMSNorm.apply(x, weight, eps=eps)


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    return LayerNorm.apply(x, weight, bias, eps=eps)


def rotary_embedding(x, cos, sin):
    """Apply rotary position embedding; ``cos``/``sin`` are arrays or tensors broadcastable to x.

    The tables are constants, so NumPy tables given with a GPU ``x`` are copied to the GPU (CuPy
    refuses to mix the two in one ufunc)."""
    xp = xp_of(x.data)
    cos = xp.asarray(cos.data if isinstance(cos, Tensor) else cos)
    sin = xp.asarray(sin.data if isinstance(sin, Tensor) else sin)
    return Rotary.apply(x, cos, sin)


def scaled_dot_product_attention(q, k, v, mask=None, causal=True, scale=None):
    """Causal attention (``Attention``); ``mask`` is added to the scores. The mask is a constant: it
    gets no gradient, so a mask that requires one is refused rather than silently left without."""
    if isinstance(mask, Tensor):
        if mask.requires_grad:
            raise ValueError("scaled_dot_product_attention: the mask requires grad, but minilora computes "
                             "no gradient for it (a learned bias would never train); pass mask.detach()")
        mask = mask.data
    return Attention.apply(q, k, v, mask, causal=causal, scale=scale)
