"""The machinery the bad-input sweeps share (``bad_inputs_sweep_torch.py``, ``bad_inputs_sweep_tensor.py``): a call
found that both libraries accept, the same call with one thing changed, and the two outcomes classed.

Each result is ``same`` (torch's exception class, or both answer), ``diff`` (another class), ``torch-ok`` (minilora
refuses what torch takes) or ``WORST`` (minilora answers where torch raises: a silent divergence); a ``same`` whose
message names minilora's classes (``minilora.Size``) where torch's names its own is counted as ``names``, one that
shares under a third of torch's words as ``words``.
"""
import collections
import inspect
import re
import signal

import numpy as np


def X(L, *shape):
    """A float32 tensor of library ``L`` (minilora or torch) drawn from normal numbers, the same in both."""
    return L.tensor(np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32))


# The first arguments tried, in order, until both libraries answer: ``lambda L: (args, kwargs)``.
def _x(L): return X(L, 2, 3, 4)
def _sq(L): return X(L, 3, 3) + 3 * L.eye(3)
CANDIDATES = [
    lambda L: ((), {}),
    lambda L: ((_x(L),), {}),
    lambda L: ((_sq(L),), {}),
    lambda L: ((_x(L), _x(L)), {}),
    lambda L: ((_sq(L), _sq(L)), {}),
    lambda L: ((_x(L), 1), {}),
    lambda L: ((_x(L), 0.5), {}),
    lambda L: ((_x(L), 1, 2), {}),
    lambda L: ((_x(L), 0, L.tensor([[[0, 1, 0, 1]]])), {}),
    lambda L: ((_x(L), _x(L), _x(L)), {}),
    lambda L: ((_sq(L), _sq(L), _sq(L)), {}),
    lambda L: ((_x(L), [1]), {}),
    lambda L: ((_x(L), 0, _x(L) > 0), {}),
    lambda L: ((_x(L) > 0,), {}),
    lambda L: ((L.tensor([3, 1, 2]),), {}),
    lambda L: (([_x(L), _x(L)],), {}),
    lambda L: ((3,), {}),
    lambda L: ((2, 3), {}),
    lambda L: ((0, 5), {}),
    lambda L: ((L.tensor([0.1, 0.9]), L.tensor([0.2, 0.3])), {}),
    lambda L: (("ij,jk->ik", _sq(L), _sq(L)), {}),
    lambda L: ((_x(L), _x(L), 0.5), {}),
    lambda L: ((_x(L), 1, 0, 2), {}),
    lambda L: ((_x(L), 2, 3, 4), {}),
    lambda L: ((_x(L), [2, 3, 4]), {}),
    lambda L: ((_x(L), 4, 6), {}),
]

# keyword -> bad values tried where a function has that parameter (dtype is another helper's: left out)
KEYED = [("dim", [10, 1.5, "a"]), ("keepdim", ["no", None]), ("reduction", ["avg"]), ("mode", ["bogus"]),
         ("p", [-0.5, "a"]), ("size", [-1, 1.5]), ("output_size", [-1]), ("kernel_size", [-1, 0]),
         ("stride", [0, -1, 1.5]), ("padding", [-1, 1.5]), ("dilation", [0, 1.5]), ("groups", [0, -1]),
         ("eps", ["a"]), ("alpha", ["a"]), ("value", ["a"]), ("dim0", [10]), ("dim1", [10]), ("dims", [[10], 1.5]),
         ("diagonal", [1.5]), ("offset", [1.5]), ("k", [-1, 1.5]), ("repeats", [-1]), ("shifts", [1.5]),
         ("descending", ["no"]), ("largest", ["no"]), ("sorted", ["no"]), ("unbiased", ["no"]),
         ("correction", ["a"]), ("rounding_mode", ["bogus"]), ("side", ["bogus"]), ("ord", ["bogus"]),
         ("q", [1.5, -0.1]), ("interpolation", ["bogus"]), ("bins", [-1, 1.5]), ("minlength", [-1]),
         ("decimals", [1.5]), ("chunks", [0, -1]), ("sections", [0]), ("split_size_or_sections", [0, -1]),
         ("split_size", [0, -1]), ("start", ["a"]), ("end", ["a"]), ("step", [0, "a"]), ("n", [-1, 1.5]),
         ("num_samples", [-1, 0]), ("replacement", ["no"]), ("out", [3]), ("index", [[0], 1.5]),
         ("source", [3]), ("src", [3]), ("mask", [3]), ("weight", ["a"]), ("shape", [[-2], [1.5]]),
         ("sizes", [[-2]]), ("length", [-1]), ("exponent", ["a"]), ("other", ["a"]), ("min", ["a"]),
         ("max", ["a"]), ("generator", [3]), ("memory_format", ["bogus"]), ("device", ["bogus"]),
         ("layout", ["bogus"]), ("requires_grad", ["no"]), ("pin_memory", ["no"]), ("upper", ["no"]),
         ("lower", ["no"]), ("return_inverse", ["no"]), ("return_counts", ["no"]), ("nan", ["a"]),
         ("posinf", ["a"]), ("neginf", ["a"]), ("equal_nan", ["no"]), ("rtol", ["a"]), ("atol", ["a"])]


def outcome(fn, seconds=10):
    """("OK", None, ("OK",)) or (exception class name, first line of its message, the names of its classes); a call
    past ``seconds`` is a TimeoutError."""
    def alarm(*_):
        raise TimeoutError("past the sweep's time limit")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        fn()
        return ("OK", None, ("OK",))
    except Exception as e:
        return (type(e).__name__, str(e).split("\n")[0][:160], tuple(c.__name__ for c in type(e).__mro__))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def parameter_names(functions):
    """The parameter names of the first of ``functions`` whose signature Python can read and has no ``*args``
    (torch's builtins have none: minilora's is read then), without ``self``; None where none can be read."""
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):
            continue
        if any(p.kind == p.VAR_POSITIONAL for p in parameters.values()):
            continue
        return {k: p for k, p in parameters.items() if k != "self"}
    return None


def mutations(args, parameters, kept=0):
    """The changed calls: (label, where: a position or a keyword, the bad value or "int64"/"bool" for a retyped
    tensor); the first ``kept`` arguments (a method's self) are only retyped."""
    out = []
    tensor_positions = [i for i, a in enumerate(args) if hasattr(a, "shape") and hasattr(a, "dtype")]
    for i in tensor_positions[kept:] if tensor_positions[:kept] == list(range(kept)) else tensor_positions:
        for label, bad in [("int", 3), ("list", [1.0, 2.0]), ("None", None),
                           ("ndarray", np.ones((2, 3, 4), np.float32)), ("str", "abc")]:
            out.append((f"arg{i}={label}", i, bad))
    if tensor_positions:
        out.append((f"arg{tensor_positions[0]} int64", tensor_positions[0], "int64"))
        out.append((f"arg{tensor_positions[0]} bool", tensor_positions[0], "bool"))
    for i, a in enumerate(args):
        bads = {int: [-1, 1.5, "a", None], float: ["a", None]}.get(type(a), [])
        out += [(f"arg{i}={b!r}", i, b) for b in bads]
    parameters = parameters or {}
    for key, bads in KEYED:
        if key in parameters:
            out += [(f"{key}={b!r}", key, b) for b in bads]
    seen = {o[0] for o in out}
    for key, p in parameters.items():
        d = p.default
        if d is inspect.Parameter.empty or key.startswith("_") or key == "dtype" or p.kind == p.VAR_KEYWORD:
            continue
        bads = {float: ["0.5"], int: [1.5, "1"], bool: ["no", None], str: ["bogus"]}.get(type(d), [])
        out += [(f"{key}={b!r}", key, b) for b in bads if f"{key}={b!r}" not in seen]
    return out


def changed(L, args, kwargs, mutation, parameters, kept=0):
    """``args, kwargs`` with ``mutation`` made in library ``L``; ``parameters`` name the arguments after the first
    ``kept`` (a method's self)."""
    label, where, bad = mutation
    args, kwargs = list(args), dict(kwargs)
    if isinstance(where, int):
        if bad == "int64":
            args[where] = (args[where] * 3).to(L.int64)
        elif bad == "bool":
            args[where] = args[where].to(L.bool)
        else:
            args[where] = bad
        return args, kwargs
    names = [None] * kept + [k for k, p in parameters.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if where in names and names.index(where) < len(args):
        args[names.index(where)] = bad
    else:
        kwargs[where] = bad
    return args, kwargs


def _words(message):
    return set((message or "").lower().replace(",", " ").replace(":", " ").split())


_TORCH_DTYPE = re.compile(r"torch\.(u?int\d+|float\d+|bfloat16|complex\d+|bool)\b")


def classify(m, t):
    """The class of minilora's outcome ``m`` beside torch's ``t`` (minilora's exception may be a subclass of torch's:
    ShapeError is a RuntimeError); a ``same`` class whose message names minilora's classes or a bare dtype where
    torch names its own is ``names``, one that shares under a third of torch's words ``words``."""
    if t[0] in m[2]:
        if m[1] and t[1] and ("minilora." in m[1] or (_TORCH_DTYPE.search(t[1]) and not _TORCH_DTYPE.search(m[1]))):
            return "names"
        mine, theirs = _words(m[1]), _words(t[1])
        return "words" if theirs and len(mine & theirs) < len(theirs) / 3 else "same"
    if m[0] == "OK":
        return "WORST"
    return "torch-ok" if t[0] == "OK" else "diff"


def _call(function, args_and_kwargs):
    args, kwargs = args_and_kwargs
    return function(*args, **kwargs)


def _candidates(kept):
    """The CANDIDATES a function (``kept``: a method, whose first argument is a tensor) is tried with."""
    return [build for build in CANDIDATES
            if not kept or (build(_torch())[0] and hasattr(build(_torch())[0][0], "shape"))]


def _torch():
    import torch
    return torch


def accepted_calls(name, target, label, kept=0):
    """The CANDIDATES calls of ``name`` that minilora answers and torch refuses (``x.view_copy(2, 2)``: torch wants the
    sizes as one tuple), printed as ``accepts`` rows: a silent acceptance teaches a call torch will not take."""
    import minilora as ml
    torch = _torch()
    found = 0
    for build in _candidates(kept):
        theirs = outcome(lambda: target(torch, name)(*build(torch)[0], **build(torch)[1]), 3)
        if theirs[0] != "OK" and theirs[0] != "TimeoutError" and \
                outcome(lambda: target(ml, name)(*build(ml)[0], **build(ml)[1]), 3)[0] == "OK":
            args = ", ".join(type(a).__name__ for a in build(torch)[0])
            print(f"accepts  {label}{name}({args}): torch={theirs[:2]}", flush=True)
            found += 1
    return found


def sweep(names, target, label, parameters_of, skip=(), kept=0):
    """Each of ``names``: the first CANDIDATES call both libraries answer (``target(L, name)`` gives the callable),
    then each mutation; prints all but ``same`` and returns the counts."""
    import minilora as ml
    import torch
    counts = collections.Counter()
    for name in names:
        if name in skip:
            continue
        base = None
        for build in _candidates(kept):
            if outcome(lambda: target(ml, name)(*build(ml)[0], **build(ml)[1]), 3)[0] == "OK" and \
               outcome(lambda: target(torch, name)(*build(torch)[0], **build(torch)[1]), 3)[0] == "OK":
                base = build
                break
        counts["accepts"] += accepted_calls(name, target, label, kept)
        if base is None:
            counts["no-base"] += 1
            continue
        parameters = parameters_of(name)
        for mutation in mutations(base(torch)[0], parameters, kept):
            results = []
            for L in (ml, torch):
                results.append(outcome(lambda: _call(target(L, name), changed(L, *base(L), mutation, parameters, kept))))
            m, t = results
            cls = classify(m, t)
            counts[cls] += 1
            if cls != "same":
                print(f"{cls:8} {label}{name}({mutation[0]}): ml={m[:2]} | torch={t[:2]}", flush=True)
    print(dict(counts))
    return counts
