"""A sweep, not a test: every unary elementwise op minilora shares with torch, on ALL 65536 float16 and bfloat16
numbers (an exhaustive check of a 16-bit unary op is one call of each library), compared bit for bit (a NaN matches
any NaN). Prints each op and dtype whose answers differ, with the count of numbers off, a few of them, and the
largest gap in 16-bit steps; with ``--binary`` the binary ops on a grid of 16-bit numbers (every 16-bit value
against a spread of others).

    PYTHONPATH=. python tests/half_bits_sweep.py [--only NAME,...] [--binary]

Round 24 wrote it to find the rest of the class of float16 ``F.gelu``'s one value in ~420 off torch (that one was
a layout: a strided 16-bit input, which this contiguous sweep does not see; tests/test_silent_values_r24.py runs
gelu strided). Its finds are pinned in tests/test_silent_values_r24.py. Counts (torch 2.13.0+cpu, Sapphire Rapids,
AVX-512), unary: 30 op/dtype forms differed at round 24's start -- erf 6584 float16 / 28690 bfloat16 numbers
(ATen's Abramowitz-Stegun erf), softshrink 14337 / 16129 (the sign of its zeros), bfloat16 gelu 508 (oneDNN's
flush), entr(-inf) -- then 20, each 1-4 numbers: float16 exp, expm1, log10, cos, tan, atan, cosh, asinh, lgamma,
logit, ndtr 1 step (torch's float kernels' own rounding, SLEEF/MKL, before the 16-bit one), bfloat16 sinh/cosh at
+-89 (SLEEF's overflow in the vectorized body), lgamma near 4e36, relu6(-0.0) (+0 for torch's -0.0: clamp's zero
sign, below). Binary (``--binary``, every number against 8 others): 31 forms, float16 atan2 and logaddexp 1 step
in 1-28 numbers; bfloat16 fmod/remainder NaN where x / y overflows float32 in torch's vectorized body (10698-28204
numbers: torch's NaN, minilora's exact remainder), fmax/fmin of 126 of the 254 NaN patterns (torch keeps the NaN).
Not swept: clamp/maximum/minimum/hardtanh's sign of zero (torch keeps x's -0.0 where minilora gives the bound's
+0; maximum/minimum by loop position), float32 (where most of these ops have tests of their own).

Round 25 (tests/test_half_elementwise_bits_r25.py): minilora's operands are now the same 16 bits (a signaling NaN
too; a trip through float32 had quieted it), and the binary grid adds each dtype's edges (``special_16bit_numbers``:
+-0, +-1, +-inf, a quiet and a signaling NaN, the largest, the smallest normal, subnormals). Fixed: a 16-bit unary op
is torch's float32 kernel rounded once (not NumPy's float16 loop, nor float64 rounded straight to 16 bits), float16
atan2/logaddexp likewise, SLEEF's fmod NaN, fmax/fmin of a signaling NaN, float16 nextafter(-0.0, 0.0). Left
(8 unary forms, 12 binary, 1-2 numbers each but the sNaN ones): float16 expm1(0.0343), lgamma(2.26), logit(0.0053);
bfloat16 lgamma near 4e36; pow(sNaN, 0) and hypot(sNaN, inf) (torch's vectorized SLEEF gives 1 and inf, its scalar
tail and minilora NaN); the sign of a zero in fmax/fmin (bfloat16: torch's answers the second of -0.0 and 0.0 in
both loops, float16's and float32's the first). maximum/minimum's zeros follow the loop (round 25: the vectorized
body answers the second operand, the scalar tail the first).

Round 26 (tests/test_silent_values_r26.py): float16 expm1 is torch's float32 kernel rounded once, 16-bit logit's log
float32's SLEEF log rounded: unary 8 -> 4 forms (left: lgamma/gammaln of both dtypes, torch's MKL vsLGamma, whose
float32 answers are 1 ulp off the correctly rounded ones in ~1% of numbers -- tests/mkl_vml.py's class); binary 12
unchanged.

Round 27 (rerun, unary): the same 4 forms, lgamma/gammaln of both dtypes (float16 lgamma(2.26) 1 step, bfloat16
near 4e36 2 steps): MKL's vsLGamma, left. The round's losses and norms: tests/loss_norm_bits_sweep.py.
"""
import argparse
import sys
import warnings

import numpy as np
import torch

import minilora as ml

# (name, where): the op is getattr(where-module, name) on each side
UNARY = [(n, "torch") for n in (
    "abs", "neg", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "sin", "cos", "tan",
    "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "sigmoid", "erf", "erfc", "erfinv",
    "lgamma", "digamma", "reciprocal", "floor", "ceil", "round", "trunc", "frac", "sign", "sgn", "square", "relu",
    "deg2rad", "rad2deg", "nan_to_num", "i0", "sinc", "logit", "signbit", "isnan", "isinf", "isfinite", "angle",
    "positive", "fix", "negative", "arccos", "arcsin", "arctan", "arcsinh", "arccosh", "arctanh", "absolute")] + [(n, "nn.functional") for n in (
    "gelu", "silu", "mish", "softplus", "elu", "selu", "celu", "hardswish", "hardsigmoid", "hardtanh", "relu6",
    "leaky_relu", "logsigmoid", "softsign", "tanhshrink", "hardshrink", "softshrink", "tanh", "sigmoid")] + [
    (n, "special") for n in ("i0e", "i1", "i1e", "ndtr", "ndtri", "log_ndtr", "erfcx", "expit", "entr", "expm1",
                             "exp2", "sinc", "round", "log1p", "erf", "erfc", "erfinv", "gammaln", "digamma",
                             "psi", "logit", "bessel_j0", "bessel_j1", "spherical_bessel_j0")]
EXTRA_FORMS = {("gelu", "nn.functional"): [{"approximate": "tanh"}], ("round", "torch"): [{"decimals": 2}],
               ("softplus", "nn.functional"): [{"beta": 2.0, "threshold": 5.0}],
               ("leaky_relu", "nn.functional"): [{"negative_slope": 0.3}], ("elu", "nn.functional"): [{"alpha": 0.7}]}
BINARY = ["add", "sub", "mul", "div", "atan2", "pow", "fmod", "remainder", "maximum", "minimum", "hypot",
          "copysign", "nextafter", "xlogy", "floor_divide", "logaddexp", "logaddexp2", "fmax", "fmin"]


def _module(lib, where):
    for part in where.split(".")[1:] if where.startswith("torch") else where.split("."):
        lib = getattr(lib, part)
    return lib


def every_16bit_number(dtype_name):
    bits = np.arange(65536, dtype=np.uint16)
    return torch.from_numpy(bits.view(np.int16).copy()).view(getattr(torch, dtype_name))


def special_16bit_numbers(dtype_name):
    """The edges of a 16-bit dtype, for the binary grid: +-0, +-1, +-inf, a quiet and a signaling NaN, the largest
    number, the smallest normal and the smallest and largest subnormal (and their negatives)."""
    exponent_bits = 5 if dtype_name == "float16" else 8
    mantissa = 15 - exponent_bits
    top = ((1 << exponent_bits) - 1) << mantissa  # (inf's bits)
    one = ((1 << (exponent_bits - 1)) - 1) << mantissa
    patterns = [0, one, top, top | (1 << (mantissa - 1)), top | 1, top - 1, 1 << mantissa, 1, (1 << mantissa) - 1]
    bits = np.array(patterns + [p | 0x8000 for p in patterns], np.uint16)
    return torch.from_numpy(bits.view(np.int16).copy()).view(getattr(torch, dtype_name))


def _as_minilora(t, dtype_name):
    """The same 16-bit numbers, bit for bit (a signaling NaN too: a trip through float32 would quiet it)."""
    bits = t.detach().contiguous().view(torch.int16).numpy()
    return ml.tensor(bits.view(np.dtype(getattr(ml, dtype_name))))


def _as_torch(t):
    array = np.ascontiguousarray(t.detach().numpy())
    if str(t.dtype) == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _same(a, b):
    """Bit-equal, or both NaN, elementwise (bool results compared as they are)."""
    a, b = a.detach(), b.detach()
    if a.dtype == torch.bool:
        return (a == b).numpy()
    a, b = a.float().numpy(), b.float().numpy()
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


def _steps(a, b, dtype_name):
    """The gap in 16-bit steps (monotone integer image of the bits)."""
    def ordered(t):
        i = t.detach().view(torch.int16).numpy().astype(np.int32)
        return np.where(i < 0, -32768 - i, i)
    if a.dtype != getattr(torch, dtype_name):
        return None
    return np.abs(ordered(a) - ordered(b))


def compare(name, where, dtype_name, x, kwargs, other=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mine_fn, theirs_fn = getattr(_module(ml, where), name), getattr(_module(torch, where), name)
        except AttributeError:
            return None
        args = (x,) if other is None else (x, other)
        try:
            theirs = theirs_fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001  (torch refuses this dtype: minilora should too)
            theirs = e
        mine_args = tuple(_as_minilora(a, dtype_name) for a in args)
        try:
            mine = mine_fn(*mine_args, **kwargs)
        except Exception as e:  # noqa: BLE001
            mine = e
    if isinstance(theirs, Exception) or isinstance(mine, Exception):
        if isinstance(theirs, Exception) != isinstance(mine, Exception):
            return f"{'torch' if isinstance(theirs, Exception) else 'minilora'} refuses: " \
                   f"{type(theirs if isinstance(theirs, Exception) else mine).__name__}"
        return None
    mine_t = _as_torch(mine)
    if mine_t.dtype != theirs.dtype:
        return f"dtype {mine_t.dtype} vs torch's {theirs.dtype}"
    same = _same(mine_t, theirs)
    off = np.flatnonzero(~same)
    if not off.size:
        return 0
    steps = _steps(mine_t.reshape(-1), theirs.reshape(-1), dtype_name)
    worst = "" if steps is None else f", up to {int(steps[off].max())} steps"
    xs = x.reshape(-1)[off[:3] % x.numel()].float().tolist()
    return f"{off.size} off{worst} (at x = {xs})"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    parser.add_argument("--binary", action="store_true")
    options = parser.parse_args()
    only = set(filter(None, options.only.split(",")))
    found = 0
    for dtype_name in ("float16", "bfloat16"):
        x = every_16bit_number(dtype_name)
        if options.binary:
            others = torch.cat([x[np.random.RandomState(0).choice(65536, 8, replace=False)],
                                special_16bit_numbers(dtype_name)])
            for name in BINARY:
                if only and name not in only:
                    continue
                for y in others.tolist():
                    other = torch.full_like(x, y)
                    result = compare(name, "torch", dtype_name, x, {}, other)
                    if result:
                        found += 1
                        print(f"{dtype_name:9s} {name}(x, {y}): {result}")
                        sys.stdout.flush()
            continue
        for name, where in dict.fromkeys(UNARY):
            if only and name not in only:
                continue
            for kwargs in [{}] + EXTRA_FORMS.get((name, where), []):
                result = compare(name, where, dtype_name, x, kwargs)
                if result:
                    found += 1
                    print(f"{dtype_name:9s} {where}.{name}{kwargs or ''}: {result}")
                    sys.stdout.flush()
    print(f"{found} op/dtype forms differ")


if __name__ == "__main__":
    main()
