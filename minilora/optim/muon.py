"""Muon, as ``torch.optim.Muon`` computes it: momentum, then an orthogonalized step, for 2-D weights.

Muon (Keller Jordan, 2024) keeps SGD's momentum buffer (``buf = lerp(buf, g, 1 - momentum)``; Nesterov's
look-ahead by default), then replaces the update matrix by an (approximately) orthogonal one with the same
row and column spaces: ``U S V^T`` becomes roughly ``U V^T``, so every direction of the update moves by about
the same amount. A few Newton-Schulz iterations of a quintic polynomial do it with matrix products only, in
bfloat16 as torch runs them. The step is ``lr`` scaled for the matrix's shape (``adjust_lr_fn``), after a
decoupled weight decay (``p *= 1 - lr * weight_decay``).

Only for 2-D parameters (hidden layers' weight matrices): biases, embeddings and the head go to AdamW.

The bfloat16 products are torch's bit for bit on small matrices; on large ones torch's oneDNN sums in another
order than NumPy's float32 matmul, so entries of the update can differ by a few bfloat16 units (2^-8 each).
"""
import math

import numpy as np

from .. import dtypes
from ..device import xp_of
from ..size import torch_spelling
from .adagrad_rmsprop import _Arithmetic, _StepEach
from .optimizer import check_one_element, learning_rate

__all__ = ["Muon"]

EPS = 1e-7
DEFAULT_A, DEFAULT_B, DEFAULT_C = 3.4445, -4.7750, 2.0315
DEFAULT_NS_STEPS = 5


class Muon(_StepEach):
    """``Muon(params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True, ns_coefficients=(3.4445, -4.775,
    2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None)``, as in PyTorch. State per trained parameter: only
    ``momentum_buffer``. Every parameter must be 2-D (``ValueError`` otherwise, as torch)."""

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(DEFAULT_A, DEFAULT_B, DEFAULT_C), eps=EPS, ns_steps=DEFAULT_NS_STEPS,
                 adjust_lr_fn=None):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                                      adjust_lr_fn=adjust_lr_fn))

    def _check_group(self, group, index):
        """torch's checks, in its words (as Adafactor's: "... should be >= 0 but is: ...")."""
        check_one_element(group, "lr")
        for ok, words, value in [(0.0 <= group["lr"], "Learning rate should be >= 0 but is", group["lr"]),
                                 (0.0 <= group["momentum"], "momentum should be >= 0 but is", group["momentum"]),
                                 (0.0 <= group["weight_decay"], "weight decay should be >= 0 but is",
                                  group["weight_decay"])]:
            if not ok:
                raise ValueError(f"{words}: {value} (parameter group {index})")
        if group["adjust_lr_fn"] not in (None, "original", "match_rms_adamw"):
            raise ValueError(f"Adjust learning rate function {group['adjust_lr_fn']} is not supported")
        super()._check_group(group, index)
        for p in group["params"]:
            if p.ndim != 2:
                raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter with size: "
                                 f"{torch_spelling(p.shape)}")

    @staticmethod
    def _new_state(p, group):
        return dict(momentum_buffer=p.device.xp.zeros_like(p.grad._array))

    @staticmethod
    def _update(p, state, group):
        ops = _Arithmetic(p.dtype)
        lr, momentum = learning_rate(group), group["momentum"]
        grad = ops.load(p.grad._array)
        buf = ops.lerp(ops.load(state["momentum_buffer"]), grad, 1 - momentum)
        state["momentum_buffer"][...] = buf
        update = ops.lerp(grad, buf, momentum) if group["nesterov"] else buf
        update = _normalized(update, group["eps"])
        bfloat16 = dtypes.is_bfloat16(p.dtype)
        if bfloat16 and not group["nesterov"]:  # torch: the update IS the buffer, and .bfloat16() of a bfloat16
            state["momentum_buffer"][...] = update  # tensor is itself, so its in-place division changes the buffer
        update = _orthogonalized(update, group["ns_coefficients"], group["ns_steps"])
        param = ops.times(ops.load(p._array), 1 - lr * group["weight_decay"])
        step = _adjusted_lr(lr, group["adjust_lr_fn"], p.shape)
        # p.add_(update, alpha=-step): the update is bfloat16, so a float16 parameter adds in float32 (promoted)
        # with alpha unrounded; a bfloat16 one rounds alpha to bfloat16, as torch's add_ in a 16-bit dtype
        if not ops.low_precision:  # float32/float64: alpha in the weights' dtype, one fused multiply-add
            p._array[...] = ops.add(param, -step, update.astype(param.dtype))  # (where the build fuses)
            return
        alpha = ops.alpha(-step) if bfloat16 else np.float32(-step)
        p._array[...] = ops.rounded(param + alpha * update.astype(param.dtype))


def _bfloat16(values):
    """One op's float32 result rounded to bfloat16, kept as float32 values (torch's bfloat16 CPU kernels): the
    low 16 bits of each float32 rounded off to nearest, ties to even -- on the bits, so it runs on any device
    (CuPy may lack a bfloat16 dtype)."""
    xp = xp_of(values)
    values = xp.asarray(dtypes.cast(values, np.dtype(np.float32)) if values.dtype != np.float32 else values)
    bits = values.view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000))
    return xp.where(xp.isnan(values), values, rounded.view(np.float32))


def _normalized(matrix, eps):
    """``M.bfloat16() / max(|M|, eps)`` (Frobenius norm), in bfloat16: the start of torch's
    ``_zeropower_via_newtonschulz``, whose singular values are then all at most 1."""
    xp = xp_of(matrix)
    x = _bfloat16(matrix)
    norm = _bfloat16(xp.sqrt((x * x).sum(dtype=np.float32)))
    return _bfloat16(x / xp.maximum(norm, _bfloat16(xp.asarray(eps, np.float32))))


def _orthogonalized(x, coefficients, steps):
    """The rest of torch's ``_zeropower_via_newtonschulz``: ``steps`` times ``A = X X^T``,
    ``X = a X + (b A + c A A) X``, in bfloat16 (each product in float32, rounded once to bfloat16, as torch's
    CPU kernels); a tall matrix is worked on transposed. Returns bfloat16 values as float32."""
    if steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if len(coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    a, b, c = (np.float32(k) for k in coefficients)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    for _ in range(steps):
        gram = _bfloat16(x @ x.T)
        gram_update = _bfloat16(b * gram + c * (gram @ gram))  # addmm(gram, gram, gram, beta=b, alpha=c)
        x = _bfloat16(a * x + gram_update @ x)  # addmm(x, gram_update, x, beta=a)
    return x.T if tall else x


def _adjusted_lr(lr, adjust_lr_fn, shape):
    """The step size for an A x B matrix: ``lr * sqrt(max(1, A / B))`` (Keller Jordan's, the default), or
    ``lr * 0.2 * sqrt(max(A, B))`` (``"match_rms_adamw"``: Moonshot's, an update as large as AdamW's)."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    return lr * 0.2 * math.sqrt(max(rows, cols))
