"""Mutation tests of the exercises: each exercise's marked tests must catch a learner's plausible mistakes.

For every exercise region (minilora/exercises.py) the table ``VARIANTS`` holds replacement regions:

* MUTANTS, plausible wrong solutions (a missing transpose, a forgotten scale, eps outside the root,
  a gradient for a frozen weight, ...): with one in place, SOME marked test of that exercise must fail;
* ALTERNATIVES, correct solutions written differently (another op order, einsum, a loop): with one in
  place, EVERY marked test must pass (the tests check the math, not the solution's spelling).

How a variant is put in place, without touching the real files: Python regions are compiled into a copy
of their module's source, and the code object of the enclosing function replaces the live function's
``__code__`` (every reference to it -- imports, decorators' wrappers, staticmethods -- sees the variant);
CUDA regions are pasted into ``minilora.kernels.source``'s output, so the emulator compiles the variant.
The marked tests then run in-process (``pytest.main``), in a driver subprocess (this file run as a script)
per group of exercises, so the mutants never reach the pytest session that runs this file.

The default run sweeps a few exercises (``FAST``, a few seconds); ``MINILORA_MUTANTS=1`` sweeps all of them
(about two minutes, most of it the CUDA variants' emulator builds).
"""
import ast
import contextlib
import gc
import importlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script (the driver)
    sys.path.insert(0, str(ROOT))

import background_runs  # noqa: E402
from minilora import exercises  # noqa: E402

EXERCISES = {e.number: e for e in exercises.find_exercises(ROOT) if e.solved}
CUDA = {e.number for e in exercises.find_exercises(ROOT) if e.path.endswith(".cu")}
# The variants replace solution regions; a student copy (stubs, or a learner's own code) has none to replace.
pytestmark = pytest.mark.skipif(not all(e.solved for e in exercises.find_exercises(ROOT)),
                                reason="a student copy: mutation tests run on the solution tree")
M, ALT = "mutant", "alternative"
SWEEP_ALL = os.environ.get("MINILORA_MUTANTS") == "1"
FAST = ("1.1", "2.1", "6.3", "8.3")  # the default run's sample (about 1 s of CPU each)

# ==================================================================================================
# The variants: (kind, name, replacement region). Names say what the learner got wrong.
# ==================================================================================================
VARIANTS = {
    "1.1": [
        (M, "leading axes only, size-1 axes left unsummed", """
            extra = grad.ndim - len(shape)
            return grad.sum(axis=tuple(range(extra))) if extra else grad
            """),
        (M, "size-1 axes counted from the left (no offset for the missing axes)", """
            if grad.shape == shape:
                return grad
            extra = grad.ndim - len(shape)
            axes = tuple(range(extra)) + tuple(i for i, n in enumerate(shape) if n == 1)
            return grad.sum(axis=axes, keepdims=True).reshape(shape)
            """),
        (M, "mean instead of sum", """
            if grad.shape == shape:
                return grad
            extra = grad.ndim - len(shape)
            axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape)
                                               if n == 1 and grad.shape[i + extra] != 1)
            return grad.mean(axis=axes, keepdims=True).reshape(shape)
            """),
        (M, "no keepdims, no reshape: size-1 axes dropped", """
            if grad.shape == shape:
                return grad
            extra = grad.ndim - len(shape)
            axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape)
                                               if n == 1 and grad.shape[i + extra] != 1)
            return grad.sum(axis=axes)
            """),
        (ALT, "a loop: leading axes, then each size-1 axis", """
            while grad.ndim > len(shape):
                grad = grad.sum(axis=0)
            for i, n in enumerate(shape):
                if n == 1 and grad.shape[i] != 1:
                    grad = grad.sum(axis=i, keepdims=True)
            return grad.reshape(shape)
            """),
        (ALT, "axes from the right, without keepdims", """
            ndim = len(shape)
            axes = [i for i in range(grad.ndim) if i < grad.ndim - ndim or
                    (shape[i - grad.ndim + ndim] == 1 and grad.shape[i] != 1)]
            return grad.sum(axis=tuple(axes)).reshape(shape) if axes else grad.reshape(shape)
            """),
    ],
    "1.2": [
        (M, "gradients swapped (g * a for a)", """
            a, b = ctx.a, ctx.b
            a_shape, b_shape = (_shape(a), _shape(b)) if na and nb else ctx.shapes
            return (unbroadcast(g * a, a_shape) if na else None,
                    unbroadcast(g * b, b_shape) if nb else None)
            """),
        (M, "b's gradient not unbroadcast", """
            a, b = ctx.a, ctx.b
            a_shape, b_shape = (_shape(a), _shape(b)) if na and nb else ctx.shapes
            return (unbroadcast(g * b, a_shape) if na else None, g * a if nb else None)
            """),
        (M, "plain g (forgot the other factor) for b", """
            a, b = ctx.a, ctx.b
            a_shape, b_shape = (_shape(a), _shape(b)) if na and nb else ctx.shapes
            return (unbroadcast(g * b, a_shape) if na else None,
                    unbroadcast(g, b_shape) if nb else None)
            """),
        (ALT, "explicit ifs, np.multiply", """
            a_shape, b_shape = (_shape(ctx.a), _shape(ctx.b)) if na and nb else ctx.shapes
            ga = gb = None
            if na:
                ga = unbroadcast(np.multiply(ctx.b, g), a_shape)
            if nb:
                gb = unbroadcast(np.multiply(ctx.a, g), b_shape)
            return ga, gb
            """),
        (ALT, "b first", """
            b_shape = _shape(ctx.b) if na and nb else ctx.shapes[1]
            a_shape = _shape(ctx.a) if na and nb else ctx.shapes[0]
            gb = unbroadcast(ctx.a * g, b_shape) if nb else None
            return (unbroadcast(ctx.b * g, a_shape) if na else None), gb
            """),
        (ALT, "in float64 (the engine casts a gradient to its input's dtype)", """
            a, b = ctx.a, ctx.b
            a_shape, b_shape = (_shape(a), _shape(b)) if na and nb else ctx.shapes
            g = np.asarray(g, dtype=np.float64)
            return (unbroadcast(g * b, a_shape) if na else None,
                    unbroadcast(g * a, b_shape) if nb else None)
            """),
    ],
    "1.3": [
        (M, "minus sign forgotten for b", """
            a, b = ctx.a, ctx.b
            a_shape, b_shape = ctx.shapes
            return (unbroadcast(g / b, a_shape) if na else None,
                    unbroadcast(g * a / (b * b), b_shape) if nb else None)
            """),
        (M, "b's gradient -g a / b (one power of b)", """
            a, b = ctx.a, ctx.b
            a_shape, b_shape = ctx.shapes
            return (unbroadcast(g / b, a_shape) if na else None,
                    unbroadcast(-g * a / b, b_shape) if nb else None)
            """),
        (M, "a's gradient g * b", """
            a, b = ctx.a, ctx.b
            a_shape, b_shape = ctx.shapes
            return (unbroadcast(g * b, a_shape) if na else None,
                    unbroadcast(-g * a / (b * b), b_shape) if nb else None)
            """),
        (M, "b's gradient not unbroadcast", """
            a, b = ctx.a, ctx.b
            a_shape, b_shape = ctx.shapes
            return (unbroadcast(g / b, a_shape) if na else None, -g * a / (b * b) if nb else None)
            """),
        (ALT, "-(g / b) * (a / b)", """
            a_shape, b_shape = ctx.shapes
            ga = g / ctx.b
            return (unbroadcast(ga, a_shape) if na else None,
                    unbroadcast(-ga * (ctx.a / ctx.b), b_shape) if nb else None)
            """),
        (ALT, "-g * a / b / b, b first", """
            gb = unbroadcast(-g * ctx.a / ctx.b / ctx.b, ctx.shapes[1]) if nb else None
            return (unbroadcast(g * (1 / ctx.b), ctx.shapes[0]) if na else None), gb
            """),
    ],
    "1.4": [
        (M, "b not transposed (fine on square shapes)", """
            ga = unbroadcast(matmul(g, b), a.shape) if need_a else None
            gb = unbroadcast(matmul(a.swapaxes(-1, -2), g), b.shape) if need_b else None
            """),
        (M, "a's gradient as b^T g (order of the product)", """
            ga = unbroadcast(matmul(b, g.swapaxes(-1, -2)), a.shape) if need_a else None
            gb = unbroadcast(matmul(a.swapaxes(-1, -2), g), b.shape) if need_b else None
            """),
        (M, ".T instead of swapping the last two axes", """
            ga = unbroadcast(matmul(g, b.T), a.shape) if need_a else None
            gb = unbroadcast(matmul(a.T, g), b.shape) if need_b else None
            """),
        (M, "broadcast batch axes averaged, not summed", """
            ga = matmul(g, b.swapaxes(-1, -2)) if need_a else None
            gb = matmul(a.swapaxes(-1, -2), g) if need_b else None
            ga = ga if ga is None or ga.shape == a.shape else ga.reshape((-1,) + a.shape).mean(axis=0)
            gb = gb if gb is None or gb.shape == b.shape else gb.reshape((-1,) + b.shape).mean(axis=0)
            """),
        (ALT, "einsum", """
            ga = unbroadcast(np.einsum("...ij,...kj->...ik", g, b), a.shape) if need_a else None
            gb = unbroadcast(np.einsum("...ki,...kj->...ij", a, g), b.shape) if need_b else None
            """),
        (ALT, "transposes of the other products", """
            ga = unbroadcast(matmul(b, g.swapaxes(-1, -2)).swapaxes(-1, -2), a.shape) if need_a else None
            gb = unbroadcast(matmul(g.swapaxes(-1, -2), a).swapaxes(-1, -2), b.shape) if need_b else None
            """),
    ],
    "1.5": [
        (M, "weight gradient transposed (x^T g)", """
            if gx is not None:
                xp_of(g).matmul(g, w, out=gx)
            gw = x.T @ g if need_w else None
            gb = g.sum(axis=0) if need_b else None
            """),
        (M, "a gradient for the frozen weight", """
            if gx is not None:
                xp_of(g).matmul(g, w, out=gx)
            gw = g.T @ x if x is not None else None
            gb = g.sum(axis=0) if need_b else None
            """),
        (M, "gx rebound, not filled", """
            if gx is not None:
                gx = g @ w
            gw = g.T @ x if need_w else None
            gb = g.sum(axis=0) if need_b else None
            """),
        (M, "bias gradient averaged over rows", """
            if gx is not None:
                xp_of(g).matmul(g, w, out=gx)
            gw = g.T @ x if need_w else None
            gb = g.mean(axis=0) if need_b else None
            """),
        (ALT, "einsum and slice assignment", """
            if gx is not None:
                gx[...] = np.einsum("ro,oi->ri", g, w)
            gw = np.einsum("ro,ri->oi", g, x) if need_w else None
            gb = np.einsum("ro->o", g) if need_b else None
            """),
        (ALT, "transposed products", """
            gb = g.sum(axis=0) if need_b else None
            gw = (x.T @ g).T if need_w else None
            if gx is not None:
                gx[...] = (w.T @ g.T).T
            """),
    ],
    "1.6": [
        (M, "row sum not subtracted", """
            return ctx.out * g
            """),
        (M, "diagonal only: p (1 - p) g", """
            p = ctx.out
            return p * (1 - p) * g
            """),
        (M, "row sum along the last axis whatever ctx.axis is", """
            p = ctx.out
            return p * (g - (g * p).sum(axis=-1, keepdims=True))
            """),
        (M, "sum of g, not of g * p", """
            p = ctx.out
            return p * (g - g.sum(axis=ctx.axis, keepdims=True))
            """),
        (ALT, "gp - p * sum(gp)", """
            gp = g * ctx.out
            return gp - ctx.out * gp.sum(axis=ctx.axis, keepdims=True)
            """),
        (ALT, "einsum-free moveaxis loop", """
            p = np.moveaxis(ctx.out, ctx.axis, -1)
            gm = np.moveaxis(g, ctx.axis, -1)
            out = np.empty_like(p)
            for idx in np.ndindex(p.shape[:-1]):
                out[idx] = p[idx] * (gm[idx] - gm[idx] @ p[idx])
            return np.moveaxis(out, -1, ctx.axis)
            """),
        (ALT, "in float64 (the engine casts a gradient to its input's dtype)", """
            p = ctx.out.astype(np.float64)
            return p * (g - (g * p).sum(axis=ctx.axis, keepdims=True))
            """),
    ],
    "1.7": [
        (M, "exp forgotten: g - out * sum(g)", """
            return g - ctx.out * g.sum(axis=ctx.axis, keepdims=True)
            """),
        (M, "sum along the last axis whatever ctx.axis is", """
            return g - xp_of(g).exp(ctx.out) * g.sum(axis=-1, keepdims=True)
            """),
        (M, "softmax's gradient instead (p * (g - sum))", """
            p = xp_of(g).exp(ctx.out)
            return p * (g - g.sum(axis=ctx.axis, keepdims=True))
            """),
        (ALT, "sum first, np.exp", """
            total = g.sum(axis=ctx.axis, keepdims=True)
            return g - total * np.exp(ctx.out)
            """),
        (ALT, "through the softmax", """
            softmax = np.exp(ctx.out)
            softmax /= softmax.sum(axis=ctx.axis, keepdims=True)
            return g - np.sum(g, axis=ctx.axis, keepdims=True) * softmax
            """),
    ],
    "2.1": [
        (M, "eps outside the sqrt", """
            r[:, 0] = 1 / (xp.sqrt(_row_mean(x, x)) + eps)
            xp.multiply(x, r, out=normed)
            if weight is None:
                out[...] = normed
            else:
                xp.multiply(normed, weight, out=out)
            """),
        (M, "sum of squares, not the mean", """
            r[:, 0] = 1 / xp.sqrt((x * x).sum(axis=1) + eps)
            xp.multiply(x, r, out=normed)
            if weight is None:
                out[...] = normed
            else:
                xp.multiply(normed, weight, out=out)
            """),
        (M, "weight ignored", """
            r[:, 0] = 1 / xp.sqrt(_row_mean(x, x) + eps)
            xp.multiply(x, r, out=normed)
            out[...] = normed
            """),
        (M, "out rebound, not filled", """
            r[:, 0] = 1 / xp.sqrt(_row_mean(x, x) + eps)
            xp.multiply(x, r, out=normed)
            out = normed if weight is None else normed * weight
            """),
        (M, "r not saved (backward reads it)", """
            rr = 1 / xp.sqrt(_row_mean(x, x) + eps)
            xp.multiply(x, rr[:, None], out=normed)
            out[...] = normed if weight is None else normed * weight
            """),
        (M, "mean of |x| instead of x^2", """
            r[:, 0] = 1 / xp.sqrt(xp.abs(x).mean(axis=1) ** 2 + eps)
            xp.multiply(x, r, out=normed)
            out[...] = normed if weight is None else normed * weight
            """),
        (ALT, "divide by the root, slice assignment", """
            rms = xp.sqrt((x ** 2).mean(axis=1, keepdims=True) + eps)
            r[...] = 1 / rms
            normed[...] = x / rms
            out[...] = normed * (1 if weight is None else weight)
            """),
        (ALT, "einsum row mean", """
            r[:, 0] = (np.einsum("ij,ij->i", x, x) / x.shape[1] + eps) ** -0.5
            normed[...] = x * r
            out[...] = normed if weight is None else weight * normed
            """),
    ],
    "2.2": [
        (M, "weight ignored", """
            k = -(_row_sum(g * x)[:, None] * (r * r * r)) / x.dtype.type(x.shape[1])
            gx[...] = g * r + x * k
            """),
        (M, "projection term missing (g w r only)", """
            gw = g * weight if weight is not None else g
            gx[...] = gw * r
            """),
        (M, "projection with g, not g * weight", """
            gw = g * weight if weight is not None else g
            k = -(_row_sum(g * x)[:, None] * (r * r * r)) / x.dtype.type(x.shape[1])
            gx[...] = gw * r + x * k
            """),
        (M, "r squared, not cubed, in the projection", """
            gw = g * weight if weight is not None else g
            k = -(_row_sum(gw * x)[:, None] * (r * r)) / x.dtype.type(x.shape[1])
            gx[...] = gw * r + x * k
            """),
        (M, "sum, not the mean, of gw * normed", """
            gw = g * weight if weight is not None else g
            xp_of(g).multiply(normed, -_row_sum(gw * normed)[:, None], out=gx)
            gx += gw
            gx *= r
            """),
        (M, "r forgotten at the end", """
            gw = g * weight if weight is not None else g
            xp_of(g).multiply(normed, -_row_mean(gw, normed)[:, None], out=gx)
            gx += gw
            """),
        (M, "gx rebound, not filled", """
            gw = g * weight if weight is not None else g
            gx = (gw - normed * _row_mean(gw, normed)[:, None]) * r
            """),
        (ALT, "from normed: r (gw - normed mean(gw normed))", """
            gw = g * weight if weight is not None else g
            xp_of(g).multiply(normed, -_row_mean(gw, normed)[:, None], out=gx)
            gx += gw
            gx *= r
            """),
        (ALT, "one expression, slice assignment", """
            gw = g if weight is None else g * weight
            gx[...] = r * (gw - normed * (gw * normed).mean(axis=1, keepdims=True))
            """),
        (ALT, "einsum on x", """
            gw = g * (1.0 if weight is None else weight)
            dot = np.einsum("ij,ij->i", gw, x)[:, None] / g.shape[1]
            gx[...] = gw * r - x * dot * r ** 3
            """),
    ],
    "2.3": [
        (M, "rotate_half itself, not its transpose", """
            half = g.shape[-1] // 2
            return xp_of(g).concatenate((-g[..., half:], g[..., :half]), axis=-1)
            """),
        (M, "halves swapped, no sign", """
            half = g.shape[-1] // 2
            return xp_of(g).concatenate((g[..., half:], g[..., :half]), axis=-1)
            """),
        (M, "identity", """
            return g
            """),
        (ALT, "minus rotate_half, slices", """
            half = g.shape[-1] // 2
            out = np.empty_like(g)
            out[..., :half] = g[..., half:]
            out[..., half:] = -g[..., :half]
            return out
            """),
        (ALT, "roll and sign", """
            half = g.shape[-1] // 2
            sign = np.concatenate((np.ones(half), -np.ones(half))).astype(g.dtype)
            return np.roll(g, -half, axis=-1) * sign
            """),
    ],
    "2.4": [
        (M, "row sum not subtracted", """
            p, g = _by_kv_head(probs, hkv), _by_kv_head(g, hkv)
            xp.matmul(p.swapaxes(-1, -2), g, out=dv)
            ds = g @ v.swapaxes(-1, -2)
            ds *= p
            ds *= scale
            xp.matmul(ds, k, out=_by_kv_head(dq, hkv))
            xp.matmul(ds.swapaxes(-1, -2), _by_kv_head(q, hkv), out=dk)
            """),
        (M, "scale forgotten", """
            p, g = _by_kv_head(probs, hkv), _by_kv_head(g, hkv)
            xp.matmul(p.swapaxes(-1, -2), g, out=dv)
            ds = g @ v.swapaxes(-1, -2)
            ds -= (g * _by_kv_head(out, hkv)).sum(axis=-1, keepdims=True)
            ds *= p
            xp.matmul(ds, k, out=_by_kv_head(dq, hkv))
            xp.matmul(ds.swapaxes(-1, -2), _by_kv_head(q, hkv), out=dk)
            """),
        (M, "row sum of dP, not of dP * P", """
            p, g = _by_kv_head(probs, hkv), _by_kv_head(g, hkv)
            xp.matmul(p.swapaxes(-1, -2), g, out=dv)
            ds = g @ v.swapaxes(-1, -2)
            ds -= ds.sum(axis=-1, keepdims=True)
            ds *= p
            ds *= scale
            xp.matmul(ds, k, out=_by_kv_head(dq, hkv))
            xp.matmul(ds.swapaxes(-1, -2), _by_kv_head(q, hkv), out=dk)
            """),
        (M, "dv = P g without the transpose (fine when Tq == Tk)", """
            p, g = _by_kv_head(probs, hkv), _by_kv_head(g, hkv)
            xp.matmul(p, g, out=dv)
            ds = g @ v.swapaxes(-1, -2)
            ds -= (g * _by_kv_head(out, hkv)).sum(axis=-1, keepdims=True)
            ds *= p
            ds *= scale
            xp.matmul(ds, k, out=_by_kv_head(dq, hkv))
            xp.matmul(ds.swapaxes(-1, -2), _by_kv_head(q, hkv), out=dk)
            """),
        (M, "dk from dS without the transpose", """
            p, g = _by_kv_head(probs, hkv), _by_kv_head(g, hkv)
            xp.matmul(p.swapaxes(-1, -2), g, out=dv)
            ds = g @ v.swapaxes(-1, -2)
            ds -= (g * _by_kv_head(out, hkv)).sum(axis=-1, keepdims=True)
            ds *= p
            ds *= scale
            xp.matmul(ds, k, out=_by_kv_head(dq, hkv))
            xp.matmul(ds, _by_kv_head(q, hkv), out=dk)
            """),
        (ALT, "row sum as rowsum(dP * P), einsum for dv and dk", """
            p, g = _by_kv_head(probs, hkv), _by_kv_head(g, hkv)
            dv[...] = np.einsum("...qk,...qd->...kd", p, g)
            dp = g @ v.swapaxes(-1, -2)
            ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True)) * scale
            _by_kv_head(dq, hkv)[...] = ds @ k
            dk[...] = np.einsum("...qk,...qd->...kd", ds, _by_kv_head(q, hkv))
            """),
        (ALT, "one expression for dS, slice assignments", """
            p, g = _by_kv_head(probs, hkv), _by_kv_head(g, hkv)
            dv[...] = p.swapaxes(-1, -2) @ g
            ds = (g @ v.swapaxes(-1, -2) - (g * _by_kv_head(out, hkv)).sum(axis=-1, keepdims=True)) * p * scale
            dk[...] = ds.swapaxes(-1, -2) @ _by_kv_head(q, hkv)
            _by_kv_head(dq, hkv)[...] = ds @ k
            """),
    ],
    "2.5": [
        (M, "divisor ignored (a sum, not the mean)", """
            grad[...] = probs
            grad[xp_of(grad).arange(len(grad)), targets] -= 1
            grad *= (g * valid).astype(grad.dtype, copy=False)[:, None]
            """),
        (M, "ignored rows not zeroed", """
            grad[...] = probs
            grad[xp_of(grad).arange(len(grad)), targets] -= 1
            grad *= (g / divisor).astype(grad.dtype, copy=False)[:, None]
            """),
        (M, "ignored rows counted: every row in the divisor", """
            grad[...] = probs
            grad[xp_of(grad).arange(len(grad)), targets] -= 1
            n = len(grad) if np.ndim(divisor) == 0 and divisor != 1 else divisor
            grad *= ((g / n) * valid).astype(grad.dtype, copy=False)[:, None]
            """),
        (M, "one-hot added, not subtracted", """
            grad[...] = probs
            grad[xp_of(grad).arange(len(grad)), targets] += 1
            grad *= ((g / divisor) * valid).astype(grad.dtype, copy=False)[:, None]
            """),
        (M, "g ignored", """
            grad[...] = probs
            grad[xp_of(grad).arange(len(grad)), targets] -= 1
            grad *= (valid / divisor).astype(grad.dtype, copy=False)[:, None]
            """),
        (ALT, "explicit one-hot", """
            onehot = np.zeros_like(probs)
            onehot[np.arange(len(probs)), targets] = 1
            grad[...] = (probs - onehot) * (g * valid / divisor)[:, None]
            """),
        (ALT, "a loop over rows", """
            for i in range(len(grad)):
                row = probs[i].copy()
                row[targets[i]] -= 1
                grad[i] = row * (g[i] if np.ndim(g) else g) * valid[i] / (divisor[i] if np.ndim(divisor) else divisor)
            """),
    ],
    "2.6": [
        (M, "gate and up swapped", """
            return self.down_proj(ops.swiglu(self.up_proj(x), self.gate_proj(x)))
            """),
        (M, "sigmoid instead of SiLU", """
            return self.down_proj(self.gate_proj(x).sigmoid() * self.up_proj(x))
            """),
        (M, "ReLU instead of SiLU", """
            return self.down_proj(self.gate_proj(x).relu() * self.up_proj(x))
            """),
        (M, "no gate (SiLU of up)", """
            up = self.up_proj(x)
            return self.down_proj(up * up.sigmoid())
            """),
        (ALT, "SiLU spelled out", """
            gate = self.gate_proj(x)
            return self.down_proj(gate * gate.sigmoid() * self.up_proj(x))
            """),
        (ALT, "up first, silu", """
            up = self.up_proj(x)
            return self.down_proj(up * ops.silu(self.gate_proj(x)))
            """),
    ],
    "3.1": [
        (M, "LoRA counted as 2 r d_in (square only)", """
            full, lora = d_out * d_in, 2 * r * d_in
            return full, lora, full / lora
            """),
        (M, "ratio inverted", """
            full, lora = d_out * d_in, r * (d_out + d_in)
            return full, lora, lora / full
            """),
        (M, "B A counted (r d_out d_in)", """
            full = d_out * d_in
            return full, r * d_out * d_in, 1 / r
            """),
        (M, "integer ratio", """
            full, lora = d_out * d_in, r * (d_out + d_in)
            return full, lora, full // lora
            """),
        (ALT, "A and B counted apart", """
            a_params, b_params = r * d_in, d_out * r
            return d_in * d_out, a_params + b_params, d_in * d_out / (a_params + b_params)
            """),
        (ALT, "from shapes", """
            shapes = [(r, d_in), (d_out, r)]
            lora = sum(int(np.prod(s)) for s in shapes)
            return int(np.prod((d_out, d_in))), lora, float(d_out * d_in) / lora
            """),
    ],
    "4.1": [
        (M, "alpha, not alpha / r", """
            return alpha / math.sqrt(r) if self.use_rslora else alpha
            """),
        (M, "rsLoRA's sqrt forgotten", """
            return alpha / r
            """),
        (M, "sqrt always", """
            return alpha / math.sqrt(r)
            """),
        (M, "r / alpha", """
            return math.sqrt(r) / alpha if self.use_rslora else r / alpha
            """),
        (M, "integer division", """
            return alpha / math.sqrt(r) if self.use_rslora else alpha // r
            """),
        (M, "self.r and self.lora_alpha, not the arguments", """
            return self.lora_alpha / math.sqrt(self.r) if self.use_rslora else self.lora_alpha / self.r
            """),
        (ALT, "r ** 0.5", """
            if self.use_rslora:
                return alpha / r ** 0.5
            return alpha / r
            """),
        (ALT, "divisor first", """
            divisor = math.sqrt(r) if self.use_rslora else r
            return alpha / divisor
            """),
    ],
    "4.2": [
        (M, "dropout on the base path too", """
            Xd = X if keep is None else X * keep
            xp.matmul(Xd, A.T, out=U)
            xp.matmul(Xd, W0.T, out=Y)
            addmm_(Y, U, B.T, alpha=s)
            if bias is not None:
                Y += bias
            """),
        (M, "no dropout at all", """
            xp.matmul(X, A.T, out=U)
            xp.matmul(X, W0.T, out=Y)
            addmm_(Y, U, B.T, alpha=s)
            if bias is not None:
                Y += bias
            """),
        (M, "scale forgotten", """
            xp.matmul(X if keep is None else X * keep, A.T, out=U)
            xp.matmul(X, W0.T, out=Y)
            addmm_(Y, U, B.T)
            if bias is not None:
                Y += bias
            """),
        (M, "U rebound, not filled (backward reads U)", """
            U = (X if keep is None else X * keep) @ A.T
            Y[...] = X @ W0.T + s * (U @ B.T)
            if bias is not None:
                Y += bias
            """),
        (M, "bias forgotten", """
            xp.matmul(X if keep is None else X * keep, A.T, out=U)
            xp.matmul(X, W0.T, out=Y)
            addmm_(Y, U, B.T, alpha=s)
            """),
        (ALT, "slice assignment", """
            U[...] = (X * (1 if keep is None else keep)) @ A.T
            Y[...] = X @ W0.T + s * (U @ B.T)
            if bias is not None:
                Y[...] += bias
            """),
        (ALT, "einsum", """
            U[...] = np.einsum("mk,rk->mr", X if keep is None else X * keep, A)
            Y[...] = np.einsum("mk,nk->mn", X, W0) + s * np.einsum("mr,nr->mn", U, B) + (0 if bias is None else bias)
            """),
        (M, "keep taken as a 0/1 mask (its 1/(1-p) dropped)", """
            xp.matmul(X if keep is None else X * (keep != 0), A.T, out=U)
            xp.matmul(X, W0.T, out=Y)
            addmm_(Y, U, B.T, alpha=s)
            if bias is not None:
                Y += bias
            """),
    ],
    "4.3": [
        (M, "dropout mask on the base path of dX too", """
            xp.matmul(dY, B, out=V)
            V *= s
            if dX is not None:
                dX[...] = dY @ W0 + V @ A
                if keep is not None:
                    dX *= keep
            dA = V.T @ (X if keep is None else X * keep) if need_dA else None
            dB = s * (dY.T @ U) if need_dB else None
            return dA, dB
            """),
        (M, "dA without the dropout mask", """
            xp.matmul(dY, B, out=V)
            V *= s
            if dX is not None:
                xp.matmul(dY, W0, out=dX)
                dX += (V @ A) * (1 if keep is None else keep)
            dA = V.T @ X if need_dA else None
            dB = s * (dY.T @ U) if need_dB else None
            return dA, dB
            """),
        (M, "dB without the scale", """
            xp.matmul(dY, B, out=V)
            V *= s
            if dX is not None:
                xp.matmul(dY, W0, out=dX)
                dX += (V @ A) * (1 if keep is None else keep)
            dA = V.T @ (X if keep is None else X * keep) if need_dA else None
            dB = dY.T @ U if need_dB else None
            return dA, dB
            """),
        (M, "a gradient for A even when it is frozen", """
            xp.matmul(dY, B, out=V)
            V *= s
            if dX is not None:
                xp.matmul(dY, W0, out=dX)
                dX += (V @ A) * (1 if keep is None else keep)
            dA = V.T @ (X if keep is None else X * keep)
            dB = s * (dY.T @ U) if need_dB else None
            return dA, dB
            """),
        (M, "scale applied twice in dX", """
            xp.matmul(dY, B, out=V)
            V *= s
            if dX is not None:
                xp.matmul(dY, W0, out=dX)
                dX += s * (V @ A) * (1 if keep is None else keep)
            dA = V.T @ (X if keep is None else X * keep) if need_dA else None
            dB = s * (dY.T @ U) if need_dB else None
            return dA, dB
            """),
        (ALT, "slice assignment", """
            V[...] = s * (dY @ B)
            if dX is not None:
                dX[...] = dY @ W0 + (V @ A) * (1 if keep is None else keep)
            Xd = X if keep is None else X * keep
            return (V.T @ Xd if need_dA else None), (dY.T @ (s * U) if need_dB else None)
            """),
        (ALT, "einsum", """
            V[...] = s * np.einsum("mn,nr->mr", dY, B)
            if dX is not None:
                dX[...] = np.einsum("mn,nk->mk", dY, W0) + np.einsum("mr,rk->mk", V, A) * (1 if keep is None else keep)
            dA = np.einsum("mr,mk->rk", V, X if keep is None else X * keep) if need_dA else None
            dB = s * np.einsum("mn,mr->nr", dY, U) if need_dB else None
            return dA, dB
            """),
    ],
    "4.4": [
        (M, "nothing zeroed", """
            pass
            """),
        (M, "B zeroed even with init_lora_weights=False", """
            init.zeros_(self.lora_B[adapter_name].weight)
            """),
        (M, "A zeroed instead of B", """
            if config.init_lora_weights is not False:
                init.zeros_(self.lora_A[adapter_name].weight)
            """),
        (M, "only for init_lora_weights=True (not 'gaussian')", """
            if config.init_lora_weights is True:
                init.zeros_(self.lora_B[adapter_name].weight)
            """),
        (ALT, "truthiness", """
            if config.init_lora_weights:
                init.zeros_(self.lora_B[adapter_name].weight)
            """),
        (ALT, "in place on the array", """
            if config.init_lora_weights is not False:
                self.lora_B[adapter_name].weight._array[...] = 0
            """),
    ],
    "4.5": [
        (M, "base weight left trainable", """
            dtype, device = base_layer.weight.dtype, base_layer.weight.device
            self.lora_A = Parameter(np.zeros((r, in_features)), dtype=dtype, device=device)
            init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.lora_B = Parameter(np.zeros((out_features, r)), dtype=dtype, device=device)
            """),
        (M, "base bias left trainable", """
            self.base_layer.weight.requires_grad = False
            dtype, device = base_layer.weight.dtype, base_layer.weight.device
            self.lora_A = Parameter(np.zeros((r, in_features)), dtype=dtype, device=device)
            init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.lora_B = Parameter(np.zeros((out_features, r)), dtype=dtype, device=device)
            """),
        (M, "A zeros, B random", """
            self.base_layer.weight.requires_grad = False
            if self.base_layer.bias is not None:
                self.base_layer.bias.requires_grad = False
            dtype, device = base_layer.weight.dtype, base_layer.weight.device
            self.lora_A = Parameter(np.zeros((r, in_features)), dtype=dtype, device=device)
            self.lora_B = Parameter(np.zeros((out_features, r)), dtype=dtype, device=device)
            init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))
            """),
        (M, "Kaiming with the default a=0", """
            self.base_layer.weight.requires_grad = False
            if self.base_layer.bias is not None:
                self.base_layer.bias.requires_grad = False
            dtype, device = base_layer.weight.dtype, base_layer.weight.device
            self.lora_A = Parameter(np.zeros((r, in_features)), dtype=dtype, device=device)
            init.kaiming_uniform_(self.lora_A)
            self.lora_B = Parameter(np.zeros((out_features, r)), dtype=dtype, device=device)
            """),
        (M, "float64 whatever the base layer's dtype", """
            self.base_layer.weight.requires_grad = False
            if self.base_layer.bias is not None:
                self.base_layer.bias.requires_grad = False
            self.lora_A = Parameter(np.zeros((r, in_features)))
            init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.lora_B = Parameter(np.zeros((out_features, r)))
            """),
        (ALT, "requires_grad_ on every base parameter, B first", """
            for p in self.base_layer.parameters():
                p.requires_grad_(False)
            w = base_layer.weight
            self.lora_B = Parameter(np.zeros((out_features, r)), dtype=w.dtype, device=w.device)
            self.lora_A = Parameter(np.zeros((r, in_features)), dtype=w.dtype, device=w.device)
            init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)
            """),
        (ALT, "the module's requires_grad_, the uniform bound written out", """
            self.base_layer.requires_grad_(False)
            dtype, device = base_layer.weight.dtype, base_layer.weight.device
            self.lora_A = Parameter(np.zeros((r, in_features)), dtype=dtype, device=device)
            bound = 1 / math.sqrt(in_features)  # Kaiming-uniform with a = sqrt(5)
            init.uniform_(self.lora_A, -bound, bound)
            self.lora_B = Parameter(np.zeros((out_features, r)), dtype=dtype, device=device)
            """),
    ],
    "4.6": [
        (M, "scaling forgotten", """
            return self.base_layer(x) + (x @ self.lora_A.T) @ self.lora_B.T
            """),
        (M, "scaling applied to the base output too", """
            return (self.base_layer(x) + (x @ self.lora_A.T) @ self.lora_B.T) * self.scaling
            """),
        (M, "lora_alpha instead of the scaling", """
            return self.base_layer(x) + (x @ self.lora_A.T) @ self.lora_B.T * (self.scaling * self.r)
            """),
        (M, "base weight without its bias", """
            return x @ self.base_layer.weight.T + (x @ self.lora_A.T) @ self.lora_B.T * self.scaling
            """),
        (ALT, "scale the rank-r activations first", """
            u = x @ self.lora_A.T
            return self.base_layer(x) + (self.scaling * u) @ self.lora_B.T
            """),
        (ALT, "linear twice", """
            from minilora.nn import functional as F
            return F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling + self.base_layer(x)
            """),
    ],
    "5.1": [
        (M, "W0 read as [K, N] (transposed index)", """
            float base = 0.0f;
            for (int k = 0; k < K; ++k) base = fmaf(X[(unsigned long long)m * K + k], W0[(unsigned long long)k * N + n], base);
            float lora = 0.0f;
            for (int j = 0; j < r; ++j) lora = fmaf(U[(unsigned long long)m * r + j], B[(unsigned long long)n * r + j], lora);
            Y[(unsigned long long)m * N + n] = base + s * lora + (has_bias ? bias[n] : 0.0f);
            """),
        (M, "scale forgotten", """
            float base = 0.0f;
            for (int k = 0; k < K; ++k) base = fmaf(X[(unsigned long long)m * K + k], W0[(unsigned long long)n * K + k], base);
            float lora = 0.0f;
            for (int j = 0; j < r; ++j) lora = fmaf(U[(unsigned long long)m * r + j], B[(unsigned long long)n * r + j], lora);
            Y[(unsigned long long)m * N + n] = base + lora + (has_bias ? bias[n] : 0.0f);
            """),
        (M, "bias read without has_bias", """
            float base = 0.0f;
            for (int k = 0; k < K; ++k) base = fmaf(X[(unsigned long long)m * K + k], W0[(unsigned long long)n * K + k], base);
            float lora = 0.0f;
            for (int j = 0; j < r; ++j) lora = fmaf(U[(unsigned long long)m * r + j], B[(unsigned long long)n * r + j], lora);
            Y[(unsigned long long)m * N + n] = base + s * lora + bias[n];
            """),
        (M, "B read as [r, N]", """
            float base = 0.0f;
            for (int k = 0; k < K; ++k) base = fmaf(X[(unsigned long long)m * K + k], W0[(unsigned long long)n * K + k], base);
            float lora = 0.0f;
            for (int j = 0; j < r; ++j) lora = fmaf(U[(unsigned long long)m * r + j], B[(unsigned long long)j * N + n], lora);
            Y[(unsigned long long)m * N + n] = base + s * lora + (has_bias ? bias[n] : 0.0f);
            """),
        (ALT, "one accumulator, plain += ", """
            float acc = has_bias ? bias[n] : 0.0f;
            for (int k = 0; k < K; ++k) acc += X[m * K + k] * W0[n * K + k];
            float lora = 0.0f;
            for (int j = 0; j < r; ++j) lora += U[m * r + j] * B[n * r + j];
            Y[m * N + n] = acc + lora * s;
            """),
        (ALT, "LoRA term first, bias by if", """
            float acc = 0.0f;
            for (int j = 0; j < r; ++j) acc += U[m * r + j] * B[n * r + j];
            acc *= s;
            for (int k = 0; k < K; ++k) acc += X[m * K + k] * W0[n * K + k];
            if (has_bias) acc += bias[n];
            Y[m * N + n] = acc;
            """),
    ],
    "5.2": [
        (M, "weight decay after the step", """
            m = fmaf(h.one_minus_beta1, g - m, m);
            v = fmaf(h.one_minus_beta2 * g, g, h.beta2 * v);
            const float denom = sqrtf(v) / h.bc2_sqrt + h.eps;
            p -= h.step_size * m / denom;
            p *= h.decay;
            """),
        (M, "eps inside the sqrt", """
            p *= h.decay;
            m = fmaf(h.one_minus_beta1, g - m, m);
            v = fmaf(h.one_minus_beta2 * g, g, h.beta2 * v);
            const float denom = sqrtf(v / (h.bc2_sqrt * h.bc2_sqrt) + h.eps);
            p -= h.step_size * m / denom;
            """),
        (M, "second moment's bias correction forgotten", """
            p *= h.decay;
            m = fmaf(h.one_minus_beta1, g - m, m);
            v = fmaf(h.one_minus_beta2 * g, g, h.beta2 * v);
            const float denom = sqrtf(v) + h.eps;
            p -= h.step_size * m / denom;
            """),
        (M, "v from |g|, not g^2", """
            p *= h.decay;
            m = fmaf(h.one_minus_beta1, g - m, m);
            v = fmaf(h.one_minus_beta2, fabsf(g), h.beta2 * v);
            const float denom = sqrtf(v) / h.bc2_sqrt + h.eps;
            p -= h.step_size * m / denom;
            """),
        (ALT, "the textbook form", """
            const float beta1 = 1.0f - h.one_minus_beta1;
            p = p * h.decay;
            m = beta1 * m + h.one_minus_beta1 * g;
            v = h.beta2 * v + h.one_minus_beta2 * g * g;
            p = p - h.step_size * m / (sqrtf(v) / h.bc2_sqrt + h.eps);
            """),
        (ALT, "moments first, decay folded into the update", """
            m += h.one_minus_beta1 * (g - m);
            v = h.beta2 * v + h.one_minus_beta2 * g * g;
            const float v_hat_sqrt = sqrtf(v) / h.bc2_sqrt;
            p = h.decay * p - h.step_size * m / (v_hat_sqrt + h.eps);
            """),
    ],
    "6.1": [
        (M, "weight decay after the update", """
            bias_correction1 = 1 - beta1 ** step
            bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
            exp_avg += (1 - beta1) * (grad - exp_avg)
            exp_avg_sq *= beta2
            exp_avg_sq += (1 - beta2) * grad * grad
            param -= (lr / bias_correction1) * exp_avg / (xp.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps)
            if weight_decay:
                param *= 1 - lr * weight_decay
            """),
        (M, "weight decay without lr", """
            bias_correction1 = 1 - beta1 ** step
            bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
            if weight_decay:
                param *= 1 - weight_decay
            exp_avg += (1 - beta1) * (grad - exp_avg)
            exp_avg_sq *= beta2
            exp_avg_sq += (1 - beta2) * grad * grad
            param -= (lr / bias_correction1) * exp_avg / (xp.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps)
            """),
        (M, "bias correction forgotten", """
            if weight_decay:
                param *= 1 - lr * weight_decay
            exp_avg += (1 - beta1) * (grad - exp_avg)
            exp_avg_sq *= beta2
            exp_avg_sq += (1 - beta2) * grad * grad
            param -= lr * exp_avg / (xp.sqrt(exp_avg_sq) + eps)
            """),
        (M, "eps inside the sqrt", """
            bias_correction1 = 1 - beta1 ** step
            bias_correction2 = 1 - beta2 ** step
            if weight_decay:
                param *= 1 - lr * weight_decay
            exp_avg += (1 - beta1) * (grad - exp_avg)
            exp_avg_sq *= beta2
            exp_avg_sq += (1 - beta2) * grad * grad
            param -= (lr / bias_correction1) * exp_avg / xp.sqrt(exp_avg_sq / bias_correction2 + eps)
            """),
        (M, "moments rebound, not updated in place", """
            bias_correction1 = 1 - beta1 ** step
            bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
            if weight_decay:
                param *= 1 - lr * weight_decay
            exp_avg = beta1 * exp_avg + (1 - beta1) * grad
            exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
            param -= (lr / bias_correction1) * exp_avg / (xp.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps)
            """),
        (M, "L2 decay folded into the gradient (Adam, not AdamW)", """
            bias_correction1 = 1 - beta1 ** step
            bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
            grad = grad + weight_decay * param
            exp_avg += (1 - beta1) * (grad - exp_avg)
            exp_avg_sq *= beta2
            exp_avg_sq += (1 - beta2) * grad * grad
            param -= (lr / bias_correction1) * exp_avg / (xp.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps)
            """),
        (ALT, "the textbook form with temporaries", """
            param *= 1 - lr * weight_decay
            exp_avg[...] = beta1 * exp_avg + (1 - beta1) * grad
            exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * grad ** 2
            if max_exp_avg_sq is not None:
                max_exp_avg_sq[...] = np.maximum(max_exp_avg_sq, exp_avg_sq)
            m_hat = exp_avg / (1 - beta1 ** step)
            v_hat = (exp_avg_sq if max_exp_avg_sq is None else max_exp_avg_sq) / (1 - beta2 ** step)
            param -= lr * m_hat / (np.sqrt(v_hat) + eps)
            """),
        (ALT, "ufuncs with out=", """
            np.multiply(param, 1 - lr * weight_decay, out=param)
            np.multiply(exp_avg, beta1, out=exp_avg)
            exp_avg += (1 - beta1) * grad
            np.multiply(exp_avg_sq, beta2, out=exp_avg_sq)
            exp_avg_sq += (1 - beta2) * np.square(grad)
            v = exp_avg_sq if max_exp_avg_sq is None else np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            denom = np.sqrt(v) / math.sqrt(1 - beta2 ** step) + eps
            param -= (lr / (1 - beta1 ** step)) * (exp_avg / denom)
            """),
        (M, "amsgrad's running maximum ignored", """
            param *= 1 - lr * weight_decay
            exp_avg[...] = beta1 * exp_avg + (1 - beta1) * grad
            exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * grad ** 2
            param -= lr * (exp_avg / (1 - beta1 ** step)) / (np.sqrt(exp_avg_sq / (1 - beta2 ** step)) + eps)
            """),
        (M, "second bias correction without its sqrt", """
            bias_correction1 = 1 - beta1 ** step
            bias_correction2 = 1 - beta2 ** step
            if weight_decay:
                param *= 1 - lr * weight_decay
            exp_avg += (1 - beta1) * (grad - exp_avg)
            exp_avg_sq *= beta2
            exp_avg_sq += (1 - beta2) * grad * grad
            param -= (lr / bias_correction1) * exp_avg / (xp.sqrt(exp_avg_sq) / bias_correction2 + eps)
            """),
    ],
    "6.2": [
        (M, "scaled up when below max_norm too", """
            coef = max_norm / (float(total) + 1e-6)
            for p in params:
                write_in_place(p.grad, _scaled(p.grad._array, coef))
            """),
        (M, "each gradient clipped by its own norm", """
            for p in params:
                own = float(np.sqrt((p.grad._array.astype(np.float64) ** 2).sum()))
                write_in_place(p.grad, _scaled(p.grad._array, _clip_coef(max_norm, np.asarray(own))))
            """),
        (M, "clipped by value (max |g|), not by the total norm", """
            for p in params:
                write_in_place(p.grad, np.clip(p.grad._array, -max_norm, max_norm))
            """),
        (M, "a new .grad, not scaled in place", """
            coef = _clip_coef(max_norm, total)
            for p in params:
                p.grad = p.grad * float(coef)
            """),
        (M, "max_norm / total without the 1e-6", """
            coef = min(max_norm / float(total), 1.0)
            for p in params:
                write_in_place(p.grad, _scaled(p.grad._array, coef))
            """),
        (ALT, "min written out, in-place multiply", """
            coef = float(max_norm) / (float(total) + 1e-6)
            if coef < 1.0:
                for p in params:
                    p.grad.mul_(coef)
            """),
        (ALT, "the coefficient as an array, write_in_place", """
            coef = np.minimum(max_norm / (total + 1e-6), 1.0)
            for p in params:
                write_in_place(p.grad, (p.grad._array * coef).astype(p.grad._array.dtype))
            """),
    ],
    "6.3": [
        (M, "linear decay after the warmup", """
            if step < num_warmup_steps:
                return _warmup(step, num_warmup_steps)
            progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
            return max(0.0, 1.0 - progress)
            """),
        (M, "warmup off by one (step + 1)", """
            if step < num_warmup_steps:
                return _warmup(step + 1, num_warmup_steps)
            progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
            """),
        (M, "progress over all steps, warmup included", """
            if step < num_warmup_steps:
                return _warmup(step, num_warmup_steps)
            progress = float(step) / float(max(1, num_training_steps))
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
            """),
        (M, "the 2 of 2 pi num_cycles forgotten", """
            if step < num_warmup_steps:
                return _warmup(step, num_warmup_steps)
            progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * progress)))
            """),
        (M, "no warmup", """
            progress = float(max(0, step - num_warmup_steps)) / float(max(1, num_training_steps - num_warmup_steps))
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
            """),
        (ALT, "warmup inline, cos written as 0.5 + 0.5 cos", """
            if step < num_warmup_steps:
                return step / max(1, num_warmup_steps)
            span = max(1, num_training_steps - num_warmup_steps)
            return max(0.0, 0.5 + 0.5 * math.cos(2 * math.pi * num_cycles * (step - num_warmup_steps) / span))
            """),
        (ALT, "float warmup, (1 + cos) / 2", """
            if step < num_warmup_steps:
                return float(step) / float(max(1, num_warmup_steps))
            progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
            return max(0.0, (1 + math.cos(2 * math.pi * num_cycles * progress)) / 2)
            """),
    ],
    "7.1": [
        (M, "scale forgotten", """
            delta = self._BA(adapter_name)
            """),
        (M, "lora_alpha, not alpha / r", """
            delta = self.lora_alpha[adapter_name] * self._BA(adapter_name)
            """),
        (M, "scale applied twice", """
            s = self.scaling[adapter_name]
            delta = s * s * self._BA(adapter_name)
            """),
        (ALT, "from the weights", """
            A = self.lora_A[adapter_name].weight._array
            B = self.lora_B[adapter_name].weight._array
            delta = B @ (self.scaling[adapter_name] * A)
            """),
        (ALT, "einsum, scale last", """
            B, A = self.lora_B[adapter_name].weight._array, self.lora_A[adapter_name].weight._array
            delta = np.einsum("or,ri->oi", B, A) * self.scaling[adapter_name]
            """),
    ],
    "7.2": [
        (M, "unmerge adds again", """
            if adapter_name not in self.lora_magnitude_vector:
                return self._with_delta(W, delta, False, safe_merge)
            """),
        (M, "delta subtracted to merge", """
            if adapter_name not in self.lora_magnitude_vector:
                return self._with_delta(W, delta, not unmerge, safe_merge)
            """),
        (M, "delta added twice", """
            if adapter_name not in self.lora_magnitude_vector:
                return self._with_delta(W, 2 * delta, unmerge, safe_merge)
            """),
        (ALT, "plain arithmetic (safe_merge's check is _with_delta's)", """
            if adapter_name not in self.lora_magnitude_vector:
                if unmerge:
                    return self._with_delta(W, -delta, False, safe_merge)
                return self._with_delta(W, delta, False, safe_merge)
            """),
        (ALT, "plain W +- delta, as the instruction says", """
            if adapter_name not in self.lora_magnitude_vector:
                return W - delta if unmerge else W + delta
            """),
    ],
    "8.1": [
        (M, "lambdas swapped", """
            A, B = (t._array for t in self._projections(adapter_name))
            lambda_b = self.vera_lambda_b[adapter_name]._array[:, None]
            lambda_d = self.vera_lambda_d[adapter_name]._array[:, None]
            return (lambda_d * B) @ (lambda_b * A)
            """),
        (M, "lambda_d forgotten", """
            A, B = (t._array for t in self._projections(adapter_name))
            lambda_b = self.vera_lambda_b[adapter_name]._array[:, None]
            return (lambda_b * B) @ A
            """),
        (M, "lambda_b forgotten", """
            A, B = (t._array for t in self._projections(adapter_name))
            lambda_d = self.vera_lambda_d[adapter_name]._array[:, None]
            return B @ (lambda_d * A)
            """),
        (M, "lambda_d scales B's rows (only when out == r)", """
            A, B = (t._array for t in self._projections(adapter_name))
            lambda_b = self.vera_lambda_b[adapter_name]._array[:, None]
            lambda_d = self.vera_lambda_d[adapter_name]._array[:, None]
            if B.shape[0] == lambda_d.shape[0]:
                return (lambda_d * lambda_b * B) @ A
            return (lambda_b * B) @ (lambda_d * A)
            """),
        (ALT, "lambda_d as B's column scale", """
            A, B = (t._array for t in self._projections(adapter_name))
            return (self.vera_lambda_b[adapter_name]._array[:, None] * B * self.vera_lambda_d[adapter_name]._array) @ A
            """),
        (ALT, "einsum", """
            A, B = (t._array for t in self._projections(adapter_name))
            lb, ld = self.vera_lambda_b[adapter_name]._array, self.vera_lambda_d[adapter_name]._array
            return np.einsum("o,or,r,ri->oi", lb, B, ld, A)
            """),
    ],
    "8.2": [
        (M, "scale forgotten", """
            Qb, Rb = np.linalg.qr(B)
            Qa, Ra = np.linalg.qr(A.T)
            Uc, S, Vhc = np.linalg.svd(Rb @ Ra.T, full_matrices=False)
            return Qb @ Uc, S, Vhc @ Qa.T
            """),
        (M, "Ra not transposed", """
            Qb, Rb = np.linalg.qr(B)
            Qa, Ra = np.linalg.qr(A.T)
            Uc, S, Vhc = np.linalg.svd(scale * Rb @ Ra, full_matrices=False)
            return Qb @ Uc, S, Vhc @ Qa.T
            """),
        (M, "Vh not rotated back with Qa", """
            Qb, Rb = np.linalg.qr(B)
            Qa, Ra = np.linalg.qr(A.T)
            Uc, S, Vhc = np.linalg.svd(scale * Rb @ Ra.T, full_matrices=False)
            return Qb @ Uc, S, Vhc
            """),
        (M, "|scale| (a negative scale's sign lost)", """
            Qb, Rb = np.linalg.qr(B)
            Qa, Ra = np.linalg.qr(A.T)
            Uc, S, Vhc = np.linalg.svd(abs(scale) * Rb @ Ra.T, full_matrices=False)
            return Qb @ Uc, S, Vhc @ Qa.T
            """),
        (ALT, "the SVD of the full product, truncated to the rank", """
            k = min(A.shape[0], B.shape[1])
            U, S, Vh = np.linalg.svd(scale * (B @ A), full_matrices=False)
            return U[:, :k], S[:k], Vh[:k]
            """),
        (ALT, "scale on the left factor", """
            Qb, Rb = np.linalg.qr(scale * B)
            Qa, Ra = np.linalg.qr(A.T)
            Uc, S, Vhc = np.linalg.svd(Rb @ Ra.T)
            return Qb @ Uc, S, (Qa @ Vhc.T).T
            """),
    ],
    "8.3": [
        (M, "S^2 instead of S", """
            s = np.asarray(singular_values, dtype=np.float64) ** 2
            total = s.sum()
            if total == 0:
                return 0.0
            p = s[s > 0] / total
            return float(np.exp(-(p * np.log(p)).sum()))
            """),
        (M, "2 ** H with a natural-log H", """
            s = np.asarray(singular_values, dtype=np.float64)
            total = s.sum()
            if total == 0:
                return 0.0
            p = s[s > 0] / total
            return float(2 ** (-(p * np.log(p)).sum()))
            """),
        (M, "the entropy, not its exp", """
            s = np.asarray(singular_values, dtype=np.float64)
            total = s.sum()
            if total == 0:
                return 0.0
            p = s[s > 0] / total
            return float(-(p * np.log(p)).sum())
            """),
        (M, "the count of non-zero values", """
            s = np.asarray(singular_values, dtype=np.float64)
            return float((s > 0).sum())
            """),
        (M, "normalised by the max, not the sum", """
            s = np.asarray(singular_values, dtype=np.float64)
            if not s.any():
                return 0.0
            p = s[s > 0] / s.max()
            return float(np.exp(-(p * np.log(p)).sum()))
            """),
        (ALT, "product form prod(p^-p)", """
            s = np.asarray(singular_values, dtype=float)
            if s.sum() == 0:
                return 0.0
            p = s / s.sum()
            p = p[p > 0]
            return float(np.prod(p ** -p))
            """),
        (ALT, "a loop with math.log", """
            values = [float(v) for v in singular_values]
            total = sum(values)
            if total == 0:
                return 0.0
            entropy = 0.0
            for v in values:
                if v > 0:
                    entropy -= v / total * math.log(v / total)
            return math.exp(entropy)
            """),
        (M, "zero values kept: 0 log 0 gives NaN", """
            s = np.asarray(singular_values, dtype=np.float64)
            total = s.sum()
            if total == 0:
                return 0.0
            p = s / total
            return float(np.exp(-(p * np.log(p)).sum()))
            """),
    ],
}


# ==================================================================================================
# Putting a variant in place (the driver side)
# ==================================================================================================
def current(ex):
    """``ex`` as the file holds it now (its lines move when the file is edited after this module loaded)."""
    text = (ROOT / ex.path).read_text(encoding="utf-8")
    [now] = [e for e in exercises.parse_file(text, ex.path) if e.number == ex.number]
    return now, text


def with_region(text, ex, code):
    """``text`` (the file holding ``ex``) with the lines between BEGIN and END replaced by ``code``."""
    lines = text.splitlines(keepends=True)
    indent = re.match(r"\s*", lines[ex.begin]).group(0)
    body = textwrap.indent(textwrap.dedent(code).strip("\n") + "\n", indent)
    return "".join(lines[:ex.begin + 1] + [body] + lines[ex.end:])


def enclosing_qualname(text, line):
    """The ``__qualname__`` of the innermost function around 1-based ``line`` of Python ``text``."""
    def search(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                    child.lineno <= line <= child.end_lineno:
                name = prefix + child.name
                if isinstance(child, ast.ClassDef):
                    return search(child, name + ".")
                return search(child, name + ".<locals>.") or name
        return None
    return search(ast.parse(text), "")


def _code_objects(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


@contextlib.contextmanager
def python_variant(ex, code):
    """Every live function object of ``ex``'s enclosing function runs ``code`` as its region, for the block."""
    module = importlib.import_module(ex.path[:-3].replace("/", "."))
    path = module.__file__
    ex, text = current(ex)
    qualname = enclosing_qualname(text, ex.begin + 1)
    [new] = [c for c in _code_objects(compile(with_region(text, ex, code), path, "exec")) if c.co_qualname == qualname]
    live = [f for f in gc.get_objects() if isinstance(f, types.FunctionType)
            and f.__code__.co_filename == path and f.__code__.co_qualname == qualname]
    assert live, f"exercise {ex.number}: no live function {qualname} in {path}"
    old = [f.__code__ for f in live]
    assert all(c.co_freevars == new.co_freevars for c in old), \
        f"exercise {ex.number}: the variant uses other names of the enclosing function than the solution"
    for f in live:
        f.__code__ = new
    try:
        yield
    finally:
        for f, c in zip(live, old):
            f.__code__ = c


@contextlib.contextmanager
def cuda_variant(ex, code):
    """``minilora.kernels`` compiles ``ex``'s kernel file with ``code`` as its region, for the block."""
    from minilora import kernels
    ex, text = current(ex)
    lines = text.splitlines()
    solution = "\n".join(lines[ex.begin + 1:ex.end]) + "\n"
    indent = re.match(r"\s*", lines[ex.begin]).group(0)
    variant = textwrap.indent(textwrap.dedent(code).strip("\n") + "\n", indent)
    real_source, filename = kernels.source, Path(ex.path).name

    def source(name):
        text = real_source(name)
        if name == filename:
            assert solution in text, f"exercise {ex.number}: the region is not in kernels.source({name!r})"
            text = text.replace(solution, variant)
        return text

    kernels.source = source
    kernels._MODULES.clear()  # compiled modules are kept by file name: build the variant's
    try:
        yield
    finally:
        kernels.source = real_source
        kernels._MODULES.clear()


def variant_in_place(ex, code):
    return cuda_variant(ex, code) if ex.path.endswith(".cu") else python_variant(ex, code)


class _Outcomes:
    """A pytest plugin that records the marked tests' outcomes."""

    def __init__(self):
        self.passed, self.skipped, self.failed = 0, 0, []

    def pytest_runtest_logreport(self, report):
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            message = crash.message if crash is not None else str(report.longrepr)
            self.failed.append(f"{report.nodeid.split('::')[-1]}: {message.strip().splitlines()[0][:200]}")
        elif report.skipped:
            self.skipped += 1
        elif report.when == "call":
            self.passed += 1

    def pytest_collectreport(self, report):
        if report.failed:
            self.failed.append(f"collection: {str(report.longrepr).strip().splitlines()[-1][:200]}")


def run_marked_tests(ex, stop_at_first_failure):
    files = [str(f) for f in exercises.marked_test_files(ROOT)[ex.marker]]
    outcomes = _Outcomes()
    args = ["-q", "-p", "no:cacheprovider", "-m", ex.marker, *files] + (["-x"] if stop_at_first_failure else [])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        pytest.main(args, plugins=[outcomes])
    return outcomes


def sweep(number):
    """Run ``number``'s marked tests with the solution, then with each variant in place; a list of dicts."""
    ex = EXERCISES[number]
    rows = []
    for kind, name, code in [("solution", "the solution", None)] + VARIANTS[number]:
        try:
            with contextlib.nullcontext() if code is None else variant_in_place(ex, code):
                got = run_marked_tests(ex, stop_at_first_failure=kind == M)
            rows.append(dict(exercise=number, kind=kind, name=name, passed=got.passed, skipped=got.skipped,
                             failed=got.failed))
        except Exception as err:  # the variant could not be put in place: a broken table entry
            rows.append(dict(exercise=number, kind=kind, name=name, passed=0, skipped=0,
                             failed=[], error=f"{type(err).__name__}: {err}"))
    return rows


def main(numbers):
    for number in numbers:
        print(json.dumps(sweep(number)), flush=True)


# ==================================================================================================
# The tests (the pytest side): the drivers run in subprocesses, beside the other tests
# ==================================================================================================
def _driver(numbers):
    env = dict(exercises.subprocess_env(ROOT), MINILORA_MUTANTS="0")
    done = subprocess.run([sys.executable, __file__, *numbers], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the mutation driver failed (exit code {done.returncode}):\n{done.stderr[-3000:]}")
    return {rows[0]["exercise"]: rows for rows in map(json.loads, done.stdout.splitlines())}


SELECTED = sorted(EXERCISES, key=lambda n: tuple(map(int, n.split(".")))) if SWEEP_ALL else \
    [n for n in FAST if n in EXERCISES]


def _groups():
    """The selected exercises' drivers: the CUDA ones in one, the rest in another."""
    cuda = [n for n in SELECTED if n in CUDA]
    return [tuple(g) for g in (cuda, [n for n in SELECTED if n not in cuda]) if g]


def start_background_runs(items, runs):
    """The drivers, when a test takes their rows: on the session's helper thread (tests/background_runs.py),
    on the core the main process leaves idle."""
    if background_runs.selected(items, __name__, "test_mutants_are_caught_and_alternatives_pass"):
        for group in _groups():
            runs.submit(("mutants", group), __name__, "_driver", group)


@pytest.fixture(scope="module")
def sweeps(request, background):
    """{exercise: its rows}, for the selected exercises (the drivers started by ``start_background_runs``;
    a file run on its own starts them here)."""
    start_background_runs(request.session.items, background)
    results = {}
    for group in _groups():
        results.update(background.result(("mutants", group)))
    return results


def _emu_missing(ex):
    import minilora as ml
    return ex.path.endswith(".cu") and not next(d for d in ml.all_devices() if d.name == "emu").enabled()


def test_every_exercise_has_mutants_and_alternatives():
    assert sorted(VARIANTS) == sorted(EXERCISES), "VARIANTS must list every exercise, and only those"
    for number, variants in VARIANTS.items():
        kinds = [kind for kind, _, _ in variants]
        assert kinds.count(M) >= 3 and kinds.count(ALT) >= 2, f"exercise {number}: {kinds}"
        names = [name for _, name, _ in variants]
        assert len(set(names)) == len(names), f"exercise {number}: two variants share a name"


@pytest.mark.parametrize("number", [n for n in VARIANTS if n not in CUDA])
def test_every_python_variant_compiles(number):
    for _, name, code in VARIANTS[number]:  # as a function body (compiling the whole module is slower)
        source = "def variant():\n" + textwrap.indent(textwrap.dedent(code).strip("\n"), "    ") + "\n"
        compile(source, f"<exercise {number}: {name}>", "exec")


def test_a_variant_is_in_place_only_inside_the_block():
    from minilora.memory import matrix_lora_params
    ex = EXERCISES["3.1"]
    with python_variant(ex, "return 1, 2, 3.0"):
        assert matrix_lora_params(4, 4, 1) == (1, 2, 3.0)
    assert matrix_lora_params(4, 4, 1) == (16, 8, 2.0)


@pytest.mark.parametrize("number", SELECTED)
def test_mutants_are_caught_and_alternatives_pass(sweeps, number):
    ex = EXERCISES[number]
    if _emu_missing(ex):
        pytest.skip(f"exercise {number} is CUDA and the emulator is not enabled")
    rows = sweeps[number]
    solution, variants = rows[0], rows[1:]
    assert not solution.get("error") and not solution["failed"] and solution["passed"], solution
    problems = []
    for row in variants:
        if row.get("error"):
            problems.append(f"{row['kind']} '{row['name']}' could not be put in place: {row['error']}")
        elif row["kind"] == M and not row["failed"]:
            problems.append(f"mutant '{row['name']}' SURVIVED: all {row['passed']} marked tests pass with it")
        elif row["kind"] == ALT and row["failed"]:
            problems.append(f"correct alternative '{row['name']}' FAILS: {row['failed'][0]}")
    assert not problems, f"exercise {number}:\n  " + "\n  ".join(problems)


if __name__ == "__main__":
    main(sys.argv[1:])
