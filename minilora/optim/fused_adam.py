"""``Adam(..., fused=True)`` / ``AdamW(..., fused=True)`` on the CPU, as torch's fused kernel computes it
(aten/src/ATen/native/cpu/FusedAdamKernel.cpp), which is not the foreach/single-tensor update's order:

    vectors of 64 bytes (AVX-512; 32 with AVX2), in the parameter's dtype (bfloat16/float16: in float32, the
    moments stored rounded, the float32 values used on):
        g = grad (* -1 with maximize) (+ p * wd: Adam's L2, a product then a sum) (AdamW: p = p * (1 - lr wd))
        m = fma(w, g - m, m)                 exp_avg.lerp_(g, w = 1 - beta1) (w >= 0.5: fma(w - 1, g - m, g))
        v = fma((1 - beta2) * g, g, v * beta2)  the build fuses the sum with its second product (measured)
        p = p + (-step_size * m) / (sqrt(v) / sqrt(1 - beta2^t) + eps)      (amsgrad: the running max of v)
    the last ``numel % lanes`` elements: the same in C++ scalars, whose ``a + b * c`` the compiler fuses
    (``float32_math.FUSED_MULTIPLY_ADD``) and whose lerp is written ``m + w * (g - m)``. Measured against torch
    2.13: bfloat16 every bit; float32/float64 every bit of the vector loop, while the scalar tail still differs
    from torch in the last bit of about one element in 100 steps (its contractions are not all known here).

step_size = lr / (1 - beta1^t), all coefficients computed in double and cast to the dtype, as the kernel does.
"""
import math

import numpy as np

from .. import dtypes, float32_math

_VECTOR_BYTES = 64 if float32_math.CPU_CAPABILITY == "AVX512" else 32


def takes(arrays):
    """NumPy float arrays, contiguous (the kernel walks raw memory): the fused kernel's steps apply."""
    return all(type(a) is np.ndarray for a in arrays) and all(a.flags.c_contiguous for a in arrays[:1] + arrays[2:])


def fused_adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay,
                    decoupled, maximize):
    """One step of torch's fused kernel on one parameter's arrays, in place (``max_exp_avg_sq``: None without
    amsgrad)."""
    stored = [a.reshape(-1) for a in (param, exp_avg, exp_avg_sq) + ((max_exp_avg_sq,) if max_exp_avg_sq is not None
                                                                     else ())]
    work = np.float64 if param.dtype == np.float64 else np.float32
    p, m, v, *mx = (dtypes.upcast(a).astype(work) for a in stored)
    g = dtypes.upcast(np.ascontiguousarray(grad).reshape(-1)).astype(work)
    lanes = _VECTOR_BYTES // param.dtype.itemsize
    split = p.size - p.size % lanes
    coefficients = _coefficients(step, lr, beta1, beta2, eps, weight_decay, work)
    for part, scalar in ((slice(0, split), False), (slice(split, p.size), True)):
        values = [a[part] for a in (p, g, m, v)] + [a[part] for a in mx]
        _update(*values, k=coefficients, scalar=scalar, decoupled=decoupled, maximize=maximize,
                decay=bool(weight_decay))
        for target, value in zip(stored, [values[0], values[2], values[3]] + values[4:]):
            target[part] = value.astype(target.dtype)


def _coefficients(step, lr, beta1, beta2, eps, weight_decay, work):
    """The kernel's doubles (``step`` read as a float), cast to the working dtype where it casts them."""
    step = float(np.float32(step))
    bias_correction1, bias_correction2 = 1 - beta1 ** step, 1 - beta2 ** step
    step_size = lr / bias_correction1
    return dict(w=work(1 - beta1), beta2=work(beta2), c2=work(1 - beta2), root2=work(math.sqrt(bias_correction2)),
                eps=work(eps), step_size=work(step_size), wd=work(weight_decay), shrink=work(1 - lr * weight_decay))


def _update(p, g, m, v, *mx, k, scalar, decoupled, maximize, decay):
    """The kernel's arithmetic on these elements (arrays, updated in place): its vector loop's, or with ``scalar``
    its C++ tail's."""
    fused = scalar and float32_math.FUSED_MULTIPLY_ADD
    if maximize:
        g = -g
    if decay and decoupled:
        p[...] = p * k["shrink"]
    elif decay:
        g = fma(p, k["wd"], g) if fused else g + p * k["wd"]
    small = abs(k["w"]) < 0.5
    if scalar and not small:  # grad - (grad - m) * (1 - w)
        m[...] = fma(-(g - m), (1 - k["w"]), g) if fused else g - (g - m) * (1 - k["w"])
    elif scalar and not fused:
        m[...] = m + k["w"] * (g - m)
    else:
        m[...] = fma(k["w"] if small else k["w"] - 1, g - m, m if small else g)
    if scalar:
        v[...] = v * k["beta2"]
        v[...] = fma(k["c2"] * g, g, v) if fused else v + k["c2"] * g * g
    else:  # (the build fuses the sum with the second product)
        v[...] = fma(k["c2"] * g, g, v * k["beta2"])
    if mx:
        mx[0][...] = np.maximum(mx[0], v)
    denom = np.sqrt(mx[0] if mx else v) / k["root2"] + k["eps"]
    p[...] = p - (k["step_size"] * m) / denom if scalar else p + (-k["step_size"] * m) / denom


def fma(a, b, c):
    """``a * b + c`` rounded once, numbers taken as arrays of the others' shape and dtype."""
    like = next(x for x in (a, b, c) if isinstance(x, np.ndarray))
    a, b, c = (x if isinstance(x, np.ndarray) else np.full(like.shape, x, like.dtype) for x in (a, b, c))
    return (float32_math.fused_multiply_add if like.dtype == np.float32 else float32_math.fused_multiply_add64)(a, b, c)
