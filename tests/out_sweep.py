"""A sweep, not a test: torch's ``out=`` argument and its in-place methods, minilora against torch 2.13.

Every function of minilora's torch namespace (``ml.X``, ``ml.linalg.X``, ``ml.special.X``, ``ml.fft.X``) whose
torch twin takes ``out=`` (an ATen schema with a written-to keyword tensor, and torch's Python call accepting it)
is called on the first argument list, from a fixed set, that torch runs; then with out tensors of each form below.
The in-place methods (``x.add_(y)``, ``x.clamp_(...)``, ...) both have are called the same way on selves of each
in-place form. Each answer -- the error's class and message, or the result's shape, strides, dtype, whether it
is the out tensor, whether its version moved, whether its values are the bits the call without out= gives (cast
to out's dtype), and the warnings given -- is compared with torch's. It prints each form whose answer differs,
then a count.

    PYTHONPATH=. python tests/out_sweep.py [NAME-PART ...] [--show N] [--inplace-only | --out-only]

Forms of out=: right (shape and dtype of the result), resize_nonempty (torch resizes it, with its UserWarning),
resize_empty (resized silently), float64/int64/float32/bool (torch's cast rules), partial_overlap (out shares
part of an input's memory), exact_overlap (out is the input: exp(x, out=x)), transposed/sliced (non-contiguous
out: written through the view), out_requires_grad / input_requires_grad (refused in grad mode),
no_grad_out_requires_grad (allowed), and for ops returning several tensors tuple_short (wrong arity), as_list,
one_tensor. In-place forms: right, transposed, broadcast_grows (the result's broadcast shape is not self's),
int_self (result type Float into a Long self), leaf_requires_grad, expanded (self's elements overlap),
no_grad_leaf (allowed).

Round 32 wrote it (torch 2.13.0+cpu): 6783 forms of 379 functions and in-place methods (132 more no argument list
fits: mostly ATen ops whose Python binding takes no out=, listed by --no-call). Before (2185b0cd): 1388 forms
differed (69 more of the NOT_SAME patterns): an out sharing part of an input's memory written silently by all but
six ops, 46 functions (torch.absolute, arccos, multiply, msort, t_copy, cholesky, qr, svd, ...) refusing out=,
kernels that refuse a wider out writing the cast values (sort, topk, quantile, inner, linalg's factors), linalg's
refusals speaking of "linalg()", the special polynomials and ihfft* not resizing their out (a ShapeError) and
casting into any dtype, a resized out laid out C-contiguous where torch's follows the result (linalg's column-major
factors), refusals naming the op called (clip()) not the kernel torch runs (clamp()), a refused out dtype not in
the kernel's own words. After: 353 (68 more NOT_SAME, each with why). Left: 268 forms where both refuse in other
words (fft's "fft expects a complex output tensor, but got Double", median's, searchsorted's, a wrong tuple's
arity, a composite op's out that requires grad, refused as out= where torch refuses the in-place write into a
leaf, ...), histc/histogram/linalg.lstsq without out= (logsumexp/std/var into a float64 out: torch's steps since
round 32's tests/test_wider_out_r32.py), clamp's wider float out refused (torch takes it, but refuses a float out
of integers), the in-place logical_*_ refusing a leaf that requires grad (torch cannot differentiate them: it
writes), and conj_physical_ of a real tensor not counting a version.
"""
import argparse
import contextlib
import fnmatch
import sys
import warnings

import numpy as np
import torch

import minilora as ml

NAMESPACES = (("", "", ""), ("linalg_", "linalg", "linalg."), ("special_", "special", "special."),
              ("fft_", "fft", "fft."))
# Drawn values (their bits are not comparable) or uninitialised memory: only the shape and flags are compared.
NO_VALUES = set("bernoulli binomial multinomial normal poisson rand rand_like randint randint_like randn randn_like "
                "randperm empty empty_like empty_permuted empty_strided".split())
# Functions left out of the sweep, each with why.
SKIPPED = {
    "sparse_coo_tensor": "sparse layouts are not minilora's",
    "split_copy": "its out= is a list of tensors, one per piece (not swept)",
    "unbind_copy": "its out= is a list of tensors, one per piece (not swept)",
}
# Forms left different on purpose, each with why (fnmatch patterns of "name/form").
_WRITES_WHILE_READING = ("torch does not check this op's out for memory it shares with an input and writes it while "
                         "still reading the input: its values are not the op's. minilora refuses it, in the words of "
                         "the ops torch checks")
NOT_SAME = {
    **{f"{name}/partial_overlap": _WRITES_WHILE_READING for name in (
        "bmm cummax cummin diff log_softmax matmul mean mm mv nanmean nansum prod softmax sum threshold tril triu "
        "linalg_matmul").split()},
    **{f"{name}/exact_overlap": _WRITES_WHILE_READING for name in "bmm matmul mm linalg_matmul".split()},
    "kron/*": "torch's kron(out=) leaves out's version counter where it was (it writes through a reshaped view of "
              "out); minilora's write counts, as every other out='s",
    "empty/*": "torch's empty(out=) writes no values, so leaves the version counter; minilora's counts the resize",
    **{f"{name}/input_requires_grad": "torch composes this op of others and copies into out, which then carries a "
                                      "NotImplemented grad_fn that fails only at backward; minilora refuses at the "
                                      "call (tests/test_torch_conformance_r4_size.py)" for name in (
        "softmax log_softmax inner tensordot quantile nanquantile diag floor_divide heaviside conj_physical "
        "nuclear_norm alias_copy diagonal_copy permute_copy select_copy slice_copy slice_scatter squeeze_copy t_copy "
        "unsqueeze_copy special_ndtr fft_ifft fft_ihfft linalg_cond linalg_eigvals linalg_ldl_factor "
        "linalg_ldl_factor_ex linalg_matrix_norm linalg_norm linalg_tensorsolve").split()},
    "lerp/float64": "torch's lerp takes a wider out with a number weight and refuses it with a tensor weight (this "
                    "form's); minilora takes it with both",
}


def _lib(x):
    return torch if x is torch else ml


def _namespace(lib, module):
    return getattr(lib, module) if module else lib


def _inputs(lib):
    """The tensors the argument lists are made of, the same values in both libraries."""
    a = np.arange(12, dtype=np.float32).reshape(3, 4) / 13 + 0.05
    b = a[::-1].copy() * 0.9 + 0.02
    s = np.array([[2, 0.5, 0.1], [0.5, 3, 0.2], [0.1, 0.2, 4]], np.float32)
    t = lib.tensor
    return dict(
        A=t(a), B=t(b), C=t(a * 0.5), S=t(s), S2=t(s.T * 0.5), W=t(a.T.copy()), v=t(a[0, :3].copy()),
        v4=t(a[1].copy()), A3=t(np.stack([a[:, :3], b[:, :3]])), I=t(np.arange(12).reshape(3, 4)),
        J=t(np.arange(12).reshape(3, 4)[::-1].copy() % 5 + 1), bools=t(a > 0.4), bools2=t(b > 0.4),
        idx=t(np.array([[0, 2], [1, 3], [3, 0]])), idx1=t(np.array([0, 2])), sorted=t(np.array([0.1, 0.3, 0.6, 0.9],
                                                                                               np.float32)),
        M3=t(a.reshape(4, 3).copy()), M3b=t(b.reshape(4, 3).copy()), z=t(a[0].copy() + 1j * a[1].copy()),
        src=t(b[:, :2].copy()), src_rows=t(b[:2].copy()),
    )


def _candidates(lib):
    """Argument lists tried in order: the first torch's function runs is the one swept."""
    x = _inputs(lib)
    A, B, C, S, I, J = x["A"], x["B"], x["C"], x["S"], x["I"], x["J"]
    return [
        (A,), (A, B), (A, 1), (A, B, C), (A, B, 0.5), (S,), (S, x["S2"]), (A, x["W"]), ([A, B],), (A, 2),
        (A, 0.2, 0.8), (x["A3"],), (x["A3"], x["A3"].transpose(1, 2)), (S, S, S), (A, A, x["W"]), (S, x["v"]),
        (x["v"], x["v"]), (x["v4"],), (x["M3"], x["M3b"]), (A, 1, x["idx"]), (A, 1, x["idx1"]),
        (A, 1, x["idx1"], x["src"]), (A, 0, x["idx1"], x["src_rows"]), (A, 1, x["idx"], x["src"]),
        (A, x["bools"]), (A, x["idx"]), (x["sorted"], A), (A, x["sorted"]), (x["bools"], A, B), (1, A),
        (A, 1, True), (A, 0, 2), (I,), (I, J), (I, 2), (x["bools"],), (x["bools"], x["bools2"]), (x["z"],),
        (3, 4), (5,), (0.0, 1.0, 5), ((3, 4),), ((3, 4), 2.0), (x["v4"], x["v4"]), (A, (0, 1)),
    ]


def _public_name(lib, prefix, module, name):
    return (prefix or "") + name


def out_functions(parts):
    """(sweep name, module, function name) for each function both libraries have whose ATen op writes an out."""
    for prefix, module, _ in NAMESPACES:
        ours = getattr(ml, module) if module else ml
        for name in sorted(dir(ours)):
            if name.startswith("_") or not callable(getattr(_namespace(torch, module), name, None)):
                continue
            key = prefix + name
            if key in SKIPPED or (parts and not any(p in key for p in parts)):
                continue
            if _has_out_schema("aten::" + key):
                yield key, module, name


def _has_out_schema(aten):
    try:
        schemas = torch._C._jit_get_schemas_for_operator(aten)
    except RuntimeError:
        return False
    return any("(a!)" in str(s) and "*," in str(s).split("(", 1)[1] for s in schemas)


def _call_of(module, name):
    """The argument list, its index among the candidates, that torch's function runs with out=, or None."""
    fn = getattr(_namespace(torch, module), name)
    for k, args in enumerate(_candidates(torch)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = fn(*args)
                outs = _fresh_outs(torch, result)
                fn(*args, out=outs if isinstance(result, tuple) else outs[0])
        except Exception:  # noqa: BLE001  (this list does not fit: the next is tried)
            continue
        return k
    return None


def _fresh_outs(lib, result):
    results = result if isinstance(result, tuple) else (result,)
    return tuple(lib.zeros(r.shape, dtype=r.dtype) for r in results)


def _bits(t):
    a = t.detach().resolve_conj().resolve_neg().cpu().numpy() if isinstance(t, torch.Tensor) else t.detach().numpy()
    return np.ascontiguousarray(a).tobytes()


def _same_bits(got, expected, dtype):
    """Whether ``got`` holds ``expected``'s values cast to ``dtype`` (each in its own library)."""
    return _bits(got) == _bits(expected.to(dtype))


def _describe(lib, result, outs, plain, versions, values):
    """What a call with out= gave, in library-neutral words."""
    results = result if isinstance(result, tuple) else (result,)
    plains = plain if isinstance(plain, tuple) else (plain,)
    described = []
    for k, (r, o) in enumerate(zip(results, outs)):
        described.append((tuple(r.shape), tuple(r.stride()), str(r.dtype).split(".")[-1], r is o,
                          o._version != versions[k],
                          None if not values or tuple(r.shape) != tuple(plains[k].shape)
                          else _same_bits(r, plains[k], r.dtype)))
    kind = type(result).__name__.removesuffix("_out") if isinstance(result, tuple) else "Tensor"
    return kind, described  # (torch 2.13 names some out= variants' named tuples frexp_out, ...: the same fields)


def _answer(call):
    """What ``call()`` gives with the warnings it gave, or its error as class and message."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            answer = call()
        except Exception as exc:  # noqa: BLE001  (every error is an answer to compare)
            return f"{type(exc).__name__}: {exc}"
    said = sorted({str(w.message)[:60] for w in caught if issubclass(w.category, UserWarning)
                   and "resized" in str(w.message)})
    return answer, said


def _as_dtype(lib, name):
    return getattr(lib, name)


def _out_form(lib, module, name, k, form):
    """The answer of ``name`` called on candidate ``k`` with an out tensor of ``form``."""
    fn = getattr(_namespace(lib, module), name)
    args = list(_candidates(lib)[k])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = fn(*args)
    plains = plain if isinstance(plain, tuple) else (plain,)
    several = isinstance(plain, tuple)
    outs = list(_fresh_outs(lib, plain))
    grad = contextlib.nullcontext
    first = next((i for i, a in enumerate(args) if isinstance(a, lib.Tensor)), None)
    r0 = plains[0]
    if form == "resize_nonempty":
        outs[0] = lib.zeros(2 if tuple(r0.shape) != (2,) else 5, dtype=r0.dtype)
    elif form == "resize_empty":
        outs[0] = lib.zeros(0, dtype=r0.dtype)
    elif form in ("float64", "int64", "float32", "bool"):
        if str(r0.dtype).split(".")[-1] == form:
            return "n/a"
        outs[0] = lib.zeros(r0.shape, dtype=_as_dtype(lib, form))
    elif form in ("partial_overlap", "exact_overlap"):
        if first is None or args[first].dtype != r0.dtype or args[first].numel() < r0.numel() or not r0.numel():
            return "n/a"
        a = args[first]
        if form == "exact_overlap":
            if tuple(a.shape) != tuple(r0.shape):
                return "n/a"
            outs[0] = a
        else:
            buf = lib.zeros(a.numel() + 1, dtype=a.dtype)
            buf[:a.numel()] = a.reshape(-1)
            args[first] = buf[:a.numel()].view(a.shape)
            outs[0] = buf[1:1 + r0.numel()].view(r0.shape)
    elif form == "transposed":
        if r0.ndim != 2:
            return "n/a"
        outs[0] = lib.zeros(tuple(r0.shape)[::-1], dtype=r0.dtype).t()
    elif form == "sliced":
        if r0.ndim < 1:
            return "n/a"
        shape = tuple(r0.shape)
        outs[0] = lib.zeros(shape[:-1] + (2 * shape[-1],), dtype=r0.dtype)[..., ::2]
    elif form in ("out_requires_grad", "no_grad_out_requires_grad"):
        if not (r0.is_floating_point() or r0.is_complex()):
            return "n/a"
        outs[0].requires_grad_()
        grad = lib.no_grad if form.startswith("no_grad") else grad
    elif form == "input_requires_grad":
        if first is None or not args[first].is_floating_point():
            return "n/a"
        args[first] = args[first].clone().requires_grad_()
    elif form in ("tuple_short", "as_list", "one_tensor"):
        if not several:
            return "n/a"
    if form == "exact_overlap":  # (plain from the same input values, taken before out overwrites them)
        pass
    out = tuple(outs) if several else outs[0]
    if form == "tuple_short":
        out = tuple(outs[:-1])
    elif form == "as_list":
        out = list(outs)
    elif form == "one_tensor":
        out = outs[0]
    versions = [o._version for o in outs]

    def run():
        with grad():
            result = fn(*args, out=out)
        return _describe(lib, result, outs, plain, versions, name.split("_")[0] not in NO_VALUES
                         and name not in NO_VALUES)
    return _answer(run)


OUT_FORMS = ("right", "resize_nonempty", "resize_empty", "float64", "int64", "float32", "bool", "partial_overlap",
             "exact_overlap", "transposed", "sliced", "out_requires_grad", "input_requires_grad",
             "no_grad_out_requires_grad", "tuple_short", "as_list", "one_tensor")


# ---- in-place methods ---------------------------------------------------------------------------------------
def inplace_methods(parts):
    for name in sorted(dir(torch.Tensor)):
        if not name.endswith("_") or name.startswith("_") or not hasattr(ml.Tensor, name):
            continue
        if parts and not any(p in name for p in parts):
            continue
        yield name


def _inplace_call_of(name):
    """The candidate whose first argument torch changes in place (keeping its shape), or None."""
    for k, args in enumerate(_candidates(torch)):
        if not args or not isinstance(args[0], torch.Tensor):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self = args[0].clone()
                result = getattr(self, name)(*args[1:])
        except Exception:  # noqa: BLE001
            continue
        if result is self and tuple(self.shape) == tuple(args[0].shape):
            return k
    return None


INPLACE_FORMS = ("right", "transposed", "broadcast_grows", "int_self", "leaf_requires_grad", "expanded",
                 "no_grad_leaf")


def _inplace_form(lib, name, k, form):
    args = list(_candidates(lib)[k])
    self, rest = args[0].clone(), args[1:]
    grad = contextlib.nullcontext
    if form == "transposed":
        if self.ndim != 2:
            return "n/a"
        self = self.t().clone().t()
    elif form == "broadcast_grows":
        if self.ndim < 1 or not any(isinstance(a, lib.Tensor) and tuple(a.shape) == tuple(self.shape)
                                    for a in rest):
            return "n/a"
        self = self[:1][0].clone()
    elif form == "int_self":
        if not self.is_floating_point():
            return "n/a"
        self = (self * 10).to(lib.int64)
    elif form in ("leaf_requires_grad", "no_grad_leaf"):
        if not self.is_floating_point():
            return "n/a"
        self.requires_grad_()
        grad = lib.no_grad if form == "no_grad_leaf" else grad
    elif form == "expanded":
        if self.ndim < 1 or self.shape[0] < 2:
            return "n/a"
        self = self[:1].clone().expand(self.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            plain = getattr(self.detach().clone(), name)(*rest)
        except Exception:  # noqa: BLE001  (the in-place call's own error is what is compared)
            plain = None
    version = self._version

    def run():
        with grad():
            result = getattr(self, name)(*rest)
        return (result is self, tuple(self.shape), tuple(self.stride()), str(self.dtype).split(".")[-1],
                self._version != version, plain is not None and _bits(self) == _bits(plain))
    return _answer(run)


# ---- the sweep --------------------------------------------------------------------------------------------------
def _differs(key, theirs, ours, counts, show):
    if theirs == ours:
        return
    if any(fnmatch.fnmatch(key, pattern) for pattern in NOT_SAME):
        counts["left"] += 1
        return
    counts["differ"] += 1
    if counts["differ"] <= show:
        print(f"{key}\n  torch:    {theirs!r}\n  minilora: {ours!r}")


def _sweep_out(parts, counts, show):
    for key, module, name in out_functions(parts):
        k = _call_of(module, name)
        if k is None:
            counts["no_call"].append(key)
            continue
        for form in OUT_FORMS:
            counts["total"] += 1
            theirs = _answer(lambda: _out_form(torch, module, name, k, form))
            theirs = theirs[0] if isinstance(theirs, tuple) else theirs
            ours = _answer(lambda: _out_form(ml, module, name, k, form))
            ours = ours[0] if isinstance(ours, tuple) else ours
            _differs(f"{key}/{form}", theirs, ours, counts, show)


def _sweep_inplace(parts, counts, show):
    for name in inplace_methods(parts):
        k = _inplace_call_of(name)
        if k is None:
            counts["no_call"].append(name)
            continue
        for form in INPLACE_FORMS:
            counts["total"] += 1
            theirs = _answer(lambda: _inplace_form(torch, name, k, form))
            theirs = theirs[0] if isinstance(theirs, tuple) else theirs
            ours = _answer(lambda: _inplace_form(ml, name, k, form))
            ours = ours[0] if isinstance(ours, tuple) else ours
            _differs(f"Tensor.{name}/{form}", theirs, ours, counts, show)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("parts", nargs="*")
    parser.add_argument("--show", type=int, default=10 ** 6)
    parser.add_argument("--inplace-only", action="store_true")
    parser.add_argument("--out-only", action="store_true")
    parser.add_argument("--no-call", action="store_true", help="list the functions no argument list fits")
    args = parser.parse_args(argv)
    counts = {"differ": 0, "total": 0, "left": 0, "no_call": []}
    if not args.inplace_only:
        _sweep_out(args.parts, counts, args.show)
    if not args.out_only:
        _sweep_inplace(args.parts, counts, args.show)
    if args.no_call:
        print("no argument list fits:", " ".join(counts["no_call"]))
    print(f"{counts['differ']} of {counts['total']} forms differ from torch ({counts['left']} more left on "
          f"purpose: NOT_SAME; {len(counts['no_call'])} functions no argument list fits)")
    return 1 if counts["differ"] else 0


if __name__ == "__main__":
    sys.exit(main())
