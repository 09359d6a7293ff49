"""A sweep, not a test: float64 elementwise ops and activations (``torch.*`` and ``F.*``), values and gradients,
compared with torch bit for bit on contiguous, strided (``x[::2]``) and transposed inputs holding special values
(+-0, +-inf, nan, subnormals, the ends of each op's domain). Prints, per op, the percentage of elements off in the
value and in the gradient for each layout (``-`` where all equal).

    PYTHONPATH=. python tests/float64_bits_sweep.py [--n 40005] [--only tanh,erf,...]

Round 27 wrote it after float64 sigmoid/silu (~3% an ulp off) and tanh, logsigmoid (3-20%) were found: torch's
float64 kernels are SLEEF's ``Sleef_*d8_u10`` in the vectorized loop and C's double function in the scalar
lambda, or MKL's VML (``float32_math``'s docstring says which), where NumPy's float64 functions are its own.
"""
import argparse

import numpy as np
import torch

import minilora as ml

UNARY = {  # name: (function of (library, tensor), input range)
    "tanh": (lambda L, x: L.tanh(x), 6), "exp": (lambda L, x: L.exp(x), 40), "expm1": (lambda L, x: L.expm1(x), 40),
    "log": (lambda L, x: L.log(x), 40), "log1p": (lambda L, x: L.log1p(x), 4), "log2": (lambda L, x: L.log2(x), 40),
    "log10": (lambda L, x: L.log10(x), 40), "sqrt": (lambda L, x: L.sqrt(x), 40),
    "rsqrt": (lambda L, x: L.rsqrt(x), 40), "sin": (lambda L, x: L.sin(x), 10), "cos": (lambda L, x: L.cos(x), 10),
    "tan": (lambda L, x: L.tan(x), 3), "asin": (lambda L, x: L.asin(x), 1.1), "acos": (lambda L, x: L.acos(x), 1.1),
    "atan": (lambda L, x: L.atan(x), 10), "sinh": (lambda L, x: L.sinh(x), 20), "cosh": (lambda L, x: L.cosh(x), 20),
    "atanh": (lambda L, x: L.atanh(x), 1.1), "asinh": (lambda L, x: L.asinh(x), 20),
    "acosh": (lambda L, x: L.acosh(x), 20), "erf": (lambda L, x: L.erf(x), 5), "erfc": (lambda L, x: L.erfc(x), 10),
    "erfinv": (lambda L, x: L.erfinv(x), 1.1), "sigmoid": (lambda L, x: L.sigmoid(x), 40),
    "logit": (lambda L, x: L.logit(x), 1.1), "exp2": (lambda L, x: L.exp2(x), 40),
    "reciprocal": (lambda L, x: L.reciprocal(x), 10), "lgamma": (lambda L, x: L.lgamma(x), 10),
    "digamma": (lambda L, x: L.digamma(x), 10),
    "logsigmoid": (lambda L, x: L.nn.functional.logsigmoid(x), 40),
    "softplus": (lambda L, x: L.nn.functional.softplus(x), 40),
    "softplus_beta": (lambda L, x: L.nn.functional.softplus(x, beta=2.0, threshold=10.0), 40),
    "elu": (lambda L, x: L.nn.functional.elu(x), 20), "selu": (lambda L, x: L.nn.functional.selu(x), 20),
    "celu": (lambda L, x: L.nn.functional.celu(x, alpha=1.5), 20),
    "gelu": (lambda L, x: L.nn.functional.gelu(x), 10),
    "gelu_tanh": (lambda L, x: L.nn.functional.gelu(x, approximate="tanh"), 10),
    "mish": (lambda L, x: L.nn.functional.mish(x), 20), "silu": (lambda L, x: L.nn.functional.silu(x), 40),
    "hardswish": (lambda L, x: L.nn.functional.hardswish(x), 5),
    "hardsigmoid": (lambda L, x: L.nn.functional.hardsigmoid(x), 5),
    "softsign": (lambda L, x: L.nn.functional.softsign(x), 10),
    "tanhshrink": (lambda L, x: L.nn.functional.tanhshrink(x), 6),
    "leaky_relu": (lambda L, x: L.nn.functional.leaky_relu(x, 0.01), 10),
    "pow_number": (lambda L, x: x ** 2.5, 10), "number_pow": (lambda L, x: 1.7 ** x, 40),
    "pow_square": (lambda L, x: x ** 2, 10), "pow_cube": (lambda L, x: x ** 3, 10),
}
BINARY = {  # name: (function of (library, a, b), range of a, range of b)
    "xlogy": (lambda L, a, b: L.xlogy(a, b), 10, 10), "pow": (lambda L, a, b: L.pow(a, b), 10, 10),
    "atan2": (lambda L, a, b: L.atan2(a, b), 10, 10), "hypot": (lambda L, a, b: L.hypot(a, b), 10, 10),
    "div": (lambda L, a, b: a / b, 10, 10), "fmod": (lambda L, a, b: L.fmod(a, b), 10, 3),
    "remainder": (lambda L, a, b: L.remainder(a, b), 10, 3),
    "logaddexp": (lambda L, a, b: L.logaddexp(a, b), 40, 40),
    "logaddexp2": (lambda L, a, b: L.logaddexp2(a, b), 40, 40),
    "copysign": (lambda L, a, b: L.copysign(a, b), 10, 10),
}
SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 5e-324, -5e-324, 2.2e-308, 1e-300, -1e-300, 1e-10,
           -1e-10, 0.5, -0.5, 710.0, -745.2, 1e300, -1e300]
LAYOUTS = {"contiguous": lambda x: x, "strided": lambda x: x[::2], "transposed": lambda x: x.reshape(5, -1).T}


def draw(n, scale, seed):
    """Uniform over (-scale, scale) for half the elements, tiny and large magnitudes for the rest, the special
    values first."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-scale, scale, n)
    x[n // 2:] *= 10.0 ** rng.integers(-8, 1, n - n // 2)
    x[:len(SPECIAL)] = SPECIAL
    return x


def evaluate(L, fn, arrays, layout, g):
    """fn's value and its inputs' gradients (of ``sum(out * g)``) in library ``L``, as NumPy arrays."""
    leaves = [(torch.from_numpy(a.copy()) if L is torch else ml.tensor(a.copy())).requires_grad_() for a in arrays]
    views = [LAYOUTS[layout](leaf) for leaf in leaves]
    out = fn(L, *views)
    weight = g[:out.numel()].reshape(tuple(out.shape)).copy()
    out.backward(torch.from_numpy(weight) if L is torch else ml.tensor(weight))
    return [out.detach().numpy()] + [leaf.grad.numpy() if leaf.grad is not None else None for leaf in leaves]


def percent_off(ours, theirs):
    if ours is None or theirs is None:
        return "-" if ours is theirs else "none"
    same = (ours == theirs) | (np.isnan(ours) & np.isnan(theirs))
    off = 100.0 * np.count_nonzero(~same) / max(same.size, 1)
    return "-" if off == 0 else f"{off:.2f}%"


def sweep(name, fn, scales, n):
    g = np.random.default_rng(1).standard_normal(n)
    cells = []
    for layout in LAYOUTS:
        arrays = [draw(n, s, seed=7 + k) for k, s in enumerate(scales)]
        try:
            ours = evaluate(ml, fn, arrays, layout, g)
        except Exception as e:  # noqa: BLE001  (a sweep reports, it does not stop)
            cells.append(f"{layout}: error {type(e).__name__}: {str(e)[:60]}")
            continue
        theirs = evaluate(torch, fn, arrays, layout, g)
        parts = [percent_off(o, t) for o, t in zip(ours, theirs)]
        cells.append(f"{layout[:6]} {parts[0]:>7} grad {' '.join(f'{p:>7}' for p in parts[1:])}")
    print(f"{name:14s} " + " | ".join(cells), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=40005)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    for name, (fn, scale) in UNARY.items():
        if not only or name in only:
            sweep(name, fn, [scale], args.n)
    for name, (fn, *scales) in BINARY.items():
        if not only or name in only:
            sweep(name, fn, scales, args.n)


if __name__ == "__main__":
    main()
