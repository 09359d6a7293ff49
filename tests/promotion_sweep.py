"""A sweep, not a test: dtype promotion and integer semantics of minilora against torch. Every binary and
ternary elementwise op and operator over twelve dtypes and the operand kinds (tensor, 0-d tensor, Python
bool/int/float/complex scalar, on either side), the in-place forms, reductions' result dtypes, casts of
out-of-range values, and the factories' inferred dtypes (under float32 and float64 defaults). Each case is
compared for: the refusal (torch raises, minilora answers = ACCEPTS, the reverse = REFUSES), the result dtype
(DTYPE), the values (VALUE: integers exactly, floats to a few ulps). Prints the counts by op and the first
examples of each kind.

    PYTHONPATH=. python tests/promotion_sweep.py [--only NAME,...] [--examples 3]

Round 24 wrote it to find what the earlier dtype tests (test_opinfo_elementwise_r14, test_torch_conformance_r4_dtype,
test_fuzz_r6_api) did not reach. Counts (torch 2.13, all parts), before -> after round 24's fixes:
    same 82183 -> 82777, ACCEPTS 326 -> 2, DTYPE 32 -> 0, VALUE 470 -> 194, REFUSES 92, errtype 622 -> 660.
Left: VALUE only where a complex operand holds inf/nan (pow/**/float_power/pow_ 22 each, logaddexp 56, addcdiv 14,
ldexp 13) and gcd(int8 -128, 127) (torch -1); REFUSES: float16 with a complex 0-d tensor or number (torch's
complex32, which minilora has not); errtype: both refuse, checked in another order (an in-place op's output shape
or cast before the kernel's dtype: 494 of them 'output with shape [] doesn't match the broadcast shape'), and
ldexp(complex, float16 tensor) is accepted where torch's pow has no ComplexHalf kernel.
Round 25: errtype 660 -> 28 (an in-place op checks its output's shape, then the promoted dtype's fit, before the
kernel: Tensor._check_elementwise_inplace; arange(2**40) is torch's allocator RuntimeError). Left: float16 with a
complex 0-d tensor in maximum/minimum (complex32), clamp_min_(float16, 1j) and arange/range of a complex number
(the Scalar conversion's words as a TypeError)."""
import argparse
import collections
import sys
import warnings

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from torch_db import ml, ml_dtype, to_minilora, to_numpy, torch  # noqa: E402

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
          torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128]
INTEGERS = [-128, -7, -3, -1, 0, 1, 2, 3, 5, 7, 100, 127, 200, 300, 40000, 2 ** 31 - 1]
FLOATS = [-7.5, -3.0, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0, 3.0, 7.0, 100.25, 300.0, 1e5, float("inf"), float("nan"),
          -2.5]
SCALARS = [True, False, 0, 3, -2, 200, 2.5, -0.5, 1 + 2j]


def values(dtype, shift=0):
    """Sixteen values of a dtype, made by torch (so wraparound to the narrow integers is torch's)."""
    if dtype == torch.bool:
        data = torch.tensor([bool((i * 3 + shift) % 2) for i in range(16)])
    elif dtype.is_floating_point or dtype.is_complex:
        data = torch.tensor(np.roll(FLOATS, shift), dtype=torch.float64).to(dtype)
        if dtype.is_complex:
            data = data + 1j * torch.tensor(np.roll(FLOATS, shift + 3), dtype=torch.float64).to(dtype)
    else:
        data = torch.tensor(np.roll(INTEGERS, shift), dtype=torch.int64).to(dtype)
    return data


def operand(kind, dtype, shift):
    """An operand for torch and minilora: a tensor, a 0-d tensor or a Python scalar."""
    if kind == "tensor":
        t = values(dtype, shift)
    elif kind == "0-d":
        t = values(dtype, shift)[5 + shift % 3]
    else:
        return kind, kind
    return t, to_minilora(t)


def call(fn, module, args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with np.errstate(all="ignore"):
                return fn(module, *args), None
        except Exception as error:  # noqa: BLE001  (every refusal is compared)
            return None, error


def _plain(value):
    if isinstance(value, torch.Tensor):
        return str(value.dtype).removeprefix("torch."), to_numpy(value)
    if isinstance(value, ml.Tensor):
        array = np.asarray(value.detach().numpy())
        return str(value.dtype).removeprefix("torch."), (array.astype(np.float32) if str(array.dtype) == "bfloat16"
                                                         else array)
    if isinstance(value, (tuple, list)):
        return "tuple", [_plain(v) for v in value]
    return type(value).__name__, np.asarray(value)


def _close(ours, theirs, dtype):
    if ours.shape != theirs.shape:
        return False
    if theirs.dtype.kind in "biu" or ours.dtype.kind in "biu":
        return np.array_equal(ours, theirs)
    tol = {"float16": 2e-3, "bfloat16": 1.6e-2}.get(dtype, 1e-5)
    return bool(np.allclose(ours.astype(theirs.dtype), theirs, rtol=tol, atol=0, equal_nan=True))


def _differences(ours, theirs):
    """The first elements that differ, as 'ours (torch theirs)'."""
    if ours.shape != theirs.shape:
        return f"shape {ours.shape}, torch's {theirs.shape}"
    ours, theirs = np.atleast_1d(ours), np.atleast_1d(theirs)
    off = [i for i in range(ours.size) if not _close(ours.ravel()[i:i + 1], theirs.ravel()[i:i + 1], "")]
    return ", ".join(f"[{i}] {ours.ravel()[i]} (torch {theirs.ravel()[i]})" for i in off[:3])


def compare(fn, torch_args, ml_args):
    """'same', 'ACCEPTS', 'REFUSES', 'errtype', 'DTYPE', 'VALUE' and a note."""
    theirs, their_error = call(fn, torch, torch_args)
    ours, our_error = call(fn, ml, ml_args)
    if their_error is not None or our_error is not None:
        if their_error is None:
            return "REFUSES", f"{type(our_error).__name__}: {str(our_error)[:120]}"
        if our_error is None:
            return "ACCEPTS", f"torch {type(their_error).__name__}: {str(their_error)[:120]}"
        if type(our_error).__name__ != type(their_error).__name__:
            return "errtype", f"{type(our_error).__name__} vs torch's {type(their_error).__name__}: " \
                              f"{str(their_error)[:100]}"
        return "same", ""
    (their_kind, their_value), (our_kind, our_value) = _plain(theirs), _plain(ours)
    if their_kind != our_kind:
        return "DTYPE", f"{our_kind}, torch's {their_kind}"
    if their_kind in ("tuple", "NoneType"):
        return "same", ""
    if not _close(our_value, their_value, their_kind):
        return "VALUE", _differences(our_value, their_value)
    return "same", ""


BINARY = {
    "+": lambda m, a, b: a + b, "-": lambda m, a, b: a - b, "*": lambda m, a, b: a * b,
    "/": lambda m, a, b: a / b, "//": lambda m, a, b: a // b, "%": lambda m, a, b: a % b,
    "**": lambda m, a, b: a ** b, "&": lambda m, a, b: a & b, "|": lambda m, a, b: a | b,
    "^": lambda m, a, b: a ^ b, "<<": lambda m, a, b: a << b, ">>": lambda m, a, b: a >> b,
    "<": lambda m, a, b: a < b, "<=": lambda m, a, b: a <= b, "==": lambda m, a, b: a == b,
    "!=": lambda m, a, b: a != b, ">": lambda m, a, b: a > b, ">=": lambda m, a, b: a >= b,
    "add": lambda m, a, b: m.add(a, b), "add_alpha": lambda m, a, b: m.add(a, b, alpha=2),
    "sub_alpha": lambda m, a, b: m.sub(a, b, alpha=3), "mul": lambda m, a, b: m.mul(a, b),
    "div": lambda m, a, b: m.div(a, b), "div_trunc": lambda m, a, b: m.div(a, b, rounding_mode="trunc"),
    "div_floor": lambda m, a, b: m.div(a, b, rounding_mode="floor"),
    "true_divide": lambda m, a, b: m.true_divide(a, b), "floor_divide": lambda m, a, b: m.floor_divide(a, b),
    "remainder": lambda m, a, b: m.remainder(a, b), "fmod": lambda m, a, b: m.fmod(a, b),
    "pow": lambda m, a, b: m.pow(a, b), "float_power": lambda m, a, b: m.float_power(a, b),
    "atan2": lambda m, a, b: m.atan2(a, b), "hypot": lambda m, a, b: m.hypot(a, b),
    "maximum": lambda m, a, b: m.maximum(a, b), "minimum": lambda m, a, b: m.minimum(a, b),
    "fmax": lambda m, a, b: m.fmax(a, b), "fmin": lambda m, a, b: m.fmin(a, b),
    "bitwise_and": lambda m, a, b: m.bitwise_and(a, b), "bitwise_or": lambda m, a, b: m.bitwise_or(a, b),
    "bitwise_xor": lambda m, a, b: m.bitwise_xor(a, b),
    "bitwise_left_shift": lambda m, a, b: m.bitwise_left_shift(a, b),
    "bitwise_right_shift": lambda m, a, b: m.bitwise_right_shift(a, b),
    "logical_and": lambda m, a, b: m.logical_and(a, b), "logical_or": lambda m, a, b: m.logical_or(a, b),
    "logical_xor": lambda m, a, b: m.logical_xor(a, b),
    "eq": lambda m, a, b: m.eq(a, b), "lt": lambda m, a, b: m.lt(a, b), "ge": lambda m, a, b: m.ge(a, b),
    "clamp_min": lambda m, a, b: m.clamp(a, min=b), "clamp_max": lambda m, a, b: m.clamp(a, max=b),
    "clamp_both": lambda m, a, b: m.clamp(a, b, b),
    "where": lambda m, a, b: m.where(m.arange(16) % 3 == 0, a, b),
    "lerp": lambda m, a, b: m.lerp(a, b, 0.25), "lerp_t": lambda m, a, b: m.lerp(a, b, b),
    "addcmul": lambda m, a, b: m.addcmul(a, b, b, value=2), "addcdiv": lambda m, a, b: m.addcdiv(a, b, b, value=2),
    "copysign": lambda m, a, b: m.copysign(a, b), "xlogy": lambda m, a, b: m.xlogy(a, b),
    "nextafter": lambda m, a, b: m.nextafter(a, b), "ldexp": lambda m, a, b: m.ldexp(a, b),
    "logaddexp": lambda m, a, b: m.logaddexp(a, b), "heaviside": lambda m, a, b: m.heaviside(a, b),
    "gcd": lambda m, a, b: m.gcd(a, b), "lcm": lambda m, a, b: m.lcm(a, b),
    "isclose": lambda m, a, b: m.isclose(a, b),
}
INPLACE = {
    "+=": "__iadd__", "-=": "__isub__", "*=": "__imul__", "/=": "__itruediv__", "//=": "__ifloordiv__",
    "%=": "__imod__", "**=": "__ipow__", "&=": "__iand__", "|=": "__ior__", "^=": "__ixor__", "<<=": "__ilshift__",
    ">>=": "__irshift__", "add_": "add_", "mul_": "mul_", "div_": "div_", "sub_": "sub_", "clamp_min_": "clamp_min_",
    "pow_": "pow_", "remainder_": "remainder_", "fmod_": "fmod_", "lerp_": "lerp_",
}


def _inplace(method):
    def run(m, a, b):
        a = a.clone()
        if method == "lerp_":
            return getattr(a, method)(b, 0.5)
        return getattr(a, method)(b)
    return run


KINDS = ["tensor", "0-d"]


def binary_cases(only):
    ops = {**BINARY, **{name: _inplace(method) for name, method in INPLACE.items()}}
    for name, fn in ops.items():
        if only and name not in only:
            continue
        for da in DTYPES:
            for db in DTYPES:
                for ka in KINDS:
                    for kb in KINDS:
                        (ta, ma), (tb, mb) = operand(ka, da, 0), operand(kb, db, 5)
                        yield name, f"{ka} {da} , {kb} {db}", fn, (ta, tb), (ma, mb)
            for scalar in SCALARS:
                for ka in KINDS:
                    ta, ma = operand(ka, da, 0)
                    yield name, f"{ka} {da} , {scalar!r}", fn, (ta, scalar), (ma, scalar)
                    if name in INPLACE:
                        continue
                    yield name, f"{scalar!r} , {ka} {da}", fn, (scalar, ta), (scalar, ma)


def _zero_divisors():
    """Integer division and remainder by zero (torch raises ZeroDivisionError), shifts past the width."""
    for dtype in DTYPES[1:6]:
        for op in ("//", "%", "div_trunc", "div_floor", "remainder", "fmod", "floor_divide"):
            a = torch.tensor([7, -7, 0], dtype=dtype)
            for b in (torch.tensor([0, 0, 0], dtype=dtype), torch.tensor(0, dtype=dtype), 0):
                yield f"{op}/0", f"{dtype} / {b!r}", BINARY[op], (a, b), (to_minilora(a), to_minilora(b))
        for op in ("<<", ">>", "bitwise_left_shift", "bitwise_right_shift"):
            a = torch.tensor([1, -1, 5, 100], dtype=dtype)
            for b in (torch.tensor([7, 8, 31, 64], dtype=dtype), 70, 8, -1, torch.tensor(33, dtype=dtype)):
                yield f"{op} wide", f"{dtype} by {b!r}", BINARY[op], (a, b), (to_minilora(a), to_minilora(b))


REDUCTIONS = {
    "sum": lambda m, a: a.sum(), "sum_dim": lambda m, a: a.sum(0), "prod": lambda m, a: a.prod(),
    "cumsum": lambda m, a: a.cumsum(0), "cumprod": lambda m, a: a.cumprod(0), "mean": lambda m, a: a.mean(),
    "nansum": lambda m, a: m.nansum(a), "nanmean": lambda m, a: m.nanmean(a), "argmax": lambda m, a: a.argmax(),
    "argmin": lambda m, a: a.argmin(0), "max": lambda m, a: a.max(), "amax": lambda m, a: a.amax(0),
    "min_dim": lambda m, a: a.min(0), "median": lambda m, a: a.median(), "std": lambda m, a: a.std(),
    "var": lambda m, a: a.var(), "norm": lambda m, a: a.norm(), "all": lambda m, a: a.all(),
    "any": lambda m, a: a.any(0), "count_nonzero": lambda m, a: m.count_nonzero(a),
    "logsumexp": lambda m, a: m.logsumexp(a, 0), "sum_int32": lambda m, a: a.sum(dtype=m.int32),
    "sum_f64": lambda m, a: a.sum(dtype=m.float64), "cumsum_f": lambda m, a: a.cumsum(0, dtype=m.float32),
    "mean_f": lambda m, a: a.mean(dtype=m.float64), "bincount": lambda m, a: m.bincount(a),
    "unique": lambda m, a: m.unique(a), "sort": lambda m, a: a.sort()[0], "topk": lambda m, a: a.topk(2)[0],
    "diff": lambda m, a: m.diff(a), "trace": lambda m, a: m.trace(a.reshape(4, 4)),
    "dot": lambda m, a: m.dot(a, a), "matmul": lambda m, a: a.reshape(4, 4) @ a.reshape(4, 4),
    "neg": lambda m, a: -a, "abs": lambda m, a: a.abs(), "~": lambda m, a: ~a, "sign": lambda m, a: a.sign(),
    "sqrt": lambda m, a: a.sqrt(), "exp": lambda m, a: a.exp(), "sigmoid": lambda m, a: a.sigmoid(),
    "reciprocal": lambda m, a: a.reciprocal(), "square": lambda m, a: a.square(), "round": lambda m, a: a.round(),
    "floor": lambda m, a: a.floor(), "trunc": lambda m, a: a.trunc(), "frac": lambda m, a: a.frac(),
    "logical_not": lambda m, a: m.logical_not(a), "isnan": lambda m, a: a.isnan(), "signbit": lambda m, a: a.signbit(),
    "float": lambda m, a: a.float(), "long": lambda m, a: a.long(), "int": lambda m, a: a.int(),
    "half": lambda m, a: a.half(), "bool": lambda m, a: a.bool(), "to_uint8": lambda m, a: a.to(m.uint8),
    "to_int8": lambda m, a: a.to(m.int8), "to_int16": lambda m, a: a.to(m.int16), "byte": lambda m, a: a.byte(),
    "to_bf16": lambda m, a: a.to(m.bfloat16), "double": lambda m, a: a.double(),
    "type_as": lambda m, a: a.type_as(m.ones(1, dtype=m.int16)),
    "masked_add": lambda m, a: _masked_add(a), "index_put": lambda m, a: _index_put(m, a),
    "setitem_float": lambda m, a: _setitem(a, 2.7), "setitem_neg": lambda m, a: _setitem(a, -3),
    "setitem_big": lambda m, a: _setitem(a, 300), "setitem_bool": lambda m, a: _setitem(a, True),
    "setitem_tensor": lambda m, a: _setitem(a, a[1:3] * 2.5),
    "fill_": lambda m, a: a.clone().fill_(2.5), "zeros_like": lambda m, a: m.zeros_like(a),
    "full_like": lambda m, a: m.full_like(a, 2.5), "ones_like_int": lambda m, a: m.ones_like(a, dtype=m.int8),
}


def _masked_add(a):
    a = a.clone()
    a[a > 0] += 1
    return a


def _index_put(m, a):
    a = a.clone()
    a[m.tensor([0, 3])] = a[m.tensor([1, 2])] * 3
    return a


def _setitem(a, value):
    a = a.clone()
    a[1:3] = value
    return a


def unary_cases(only):
    for name, fn in REDUCTIONS.items():
        if only and name not in only:
            continue
        for dtype in DTYPES:
            t = values(dtype, 0)
            yield name, f"{dtype}", fn, (t,), (to_minilora(t),)


def _lists():
    return [[1, 2], [1, 2.0], [True, 2], [True, False], [1, 2j], [1.5, 2j], [2 ** 40], [True, 1.5],
            [[1], [2.5]], [], [[]], [2 ** 63 - 1], [-2 ** 63], 3, 3.0, True, 1j, [float("nan")]]


FACTORIES = {
    "tensor": lambda m, v: m.tensor(v), "as_tensor": lambda m, v: m.as_tensor(v),
    "tensor_int8": lambda m, v: m.tensor(v, dtype=m.int8), "tensor_half": lambda m, v: m.tensor(v, dtype=m.float16),
    "full": lambda m, v: m.full((2,), v), "arange": lambda m, v: m.arange(v) if not isinstance(v, list) else
    m.arange(*v), "linspace": lambda m, v: m.linspace(0, v, 3) if not isinstance(v, list) else m.linspace(*v, 3),
    "scalar_tensor": lambda m, v: m.scalar_tensor(v), "zeros": lambda m, v: m.zeros(2),
    "range": lambda m, v: m.range(0, v) if not isinstance(v, list) else m.range(*v),
    "logspace": lambda m, v: m.logspace(0, v, 3) if not isinstance(v, list) else m.logspace(*v, 3),
    "randn": lambda m, v: m.randn(2).dtype if v == 3 else None,
    "ones_add": lambda m, v: m.ones(2, dtype=m.int64) + v, "ones_mul_f16": lambda m, v: m.ones(2, dtype=m.half) * v,
}


def factory_cases(only):
    for default in (torch.float32, torch.float64):
        for name, fn in FACTORIES.items():
            if only and name not in only:
                continue
            for v in _lists():
                def run(m, value, fn=fn, default=default):
                    m.set_default_dtype(default if m is torch else ml_dtype(default))
                    try:
                        out = fn(m, value)
                        if isinstance(out, (torch.dtype,)):
                            out = torch.zeros(1, dtype=out)
                        elif out is not None and not isinstance(out, (torch.Tensor, ml.Tensor)):
                            out = ml.zeros(1, dtype=out)
                        return out
                    finally:
                        m.set_default_dtype(torch.float32 if m is torch else ml.float32)
                yield f"{name}@{str(default)[6:]}", repr(v), run, (v,), (v,)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    parser.add_argument("--examples", type=int, default=3)
    parser.add_argument("--part", default="binary,zero,unary,factory")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    parts = {"binary": lambda: binary_cases(only), "zero": _zero_divisors,
             "unary": lambda: unary_cases(only), "factory": lambda: factory_cases(only)}
    totals = collections.Counter()
    by_op = collections.defaultdict(collections.Counter)
    examples = collections.defaultdict(list)
    for part in args.part.split(","):
        for name, label, fn, torch_args, ml_args in parts[part]():
            verdict, note = compare(fn, torch_args, ml_args)
            totals[verdict] += 1
            by_op[name][verdict] += 1
            if verdict != "same" and len(examples[(name, verdict)]) < args.examples:
                examples[(name, verdict)].append(f"{label}: {note}")
    print("total", dict(totals))
    for name, counts in by_op.items():
        bad = {k: v for k, v in counts.items() if k != "same"}
        if bad:
            print(f"{name:22s} same {counts['same']:5d}  " + "  ".join(f"{k} {v}" for k, v in sorted(bad.items())))
            for verdict in sorted(bad):
                for line in examples[(name, verdict)]:
                    print(f"    {verdict:8s} {line}")


if __name__ == "__main__":
    main()
