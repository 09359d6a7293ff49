"""torch's functions for code that torch.compile traces, run eagerly: the ``sym_*`` helpers on plain numbers,
``torch.cond`` / ``torch.while_loop`` and TorchScript's ``torch.fork`` / ``torch.wait``.

    n = torch.sym_int(size / 2)                  # transformers calls these on Python numbers
    y = torch.cond(x.sum() > 0, lambda x: x.sin(), lambda x: x.cos(), (x,))
    i, x = torch.while_loop(lambda i, x: i < 3, lambda i, x: (i + 1, x * 2), (torch.tensor(0), x))
    torch.wait(torch.fork(f, x))                 # f(x): run now, a completed Future

minilora compiles nothing (minilora/compiler.py): there are no symbolic sizes, so each ``sym_*`` is its plain
Python meaning with torch's promotions and checks, ``cond`` runs the branch ``pred`` chooses and ``while_loop``
loops in Python, each after torch's own argument checks (in its words). torch traces both branches (the body)
first and refuses what its tracer cannot capture; so does minilora, which first runs each branch (the body, the
condition) once on detached copies of the operands, recording nothing and drawing nothing (the generator's state
put back: ``_traced``), and refuses as torch: an output that is an operand or a view of one, an operand changed
in place, branches whose outputs differ in structure or dtype, a constant output that is not an int, a body whose
outputs differ from what it carries in number, kind, shape or dtype, a condition that is neither a bool nor a 0-d
bool tensor (``UncapturedHigherOrderOpError`` / ``TorchRuntimeError``, torch._dynamo.exc's classes, in its words).
Branches whose outputs differ only in shape run, as torch's (it unifies them symbolically).
"""
import builtins
import math

import numpy as np

from . import random as _random
from .tensor import Tensor, no_grad

__all__ = ["sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sqrt", "sym_sum", "cond",
           "while_loop", "fork", "wait"]


# ---- sym_*: torch's SymInt-aware helpers, on plain numbers --------------------------------------------
def sym_int(a):
    """``int(a)`` (a float truncated)."""
    return builtins.int(a)


def sym_float(a):
    return builtins.float(a)


_NUMBERS, _FLOATS = (np.integer, np.floating, builtins.int, builtins.float), (np.floating, builtins.float)


def _numbers_only(a, b):
    for x in (a, b):
        if not isinstance(x, _NUMBERS):
            raise AssertionError(f"expected {_NUMBERS}, got {type(x)}")


def sym_max(a, b):
    """``max(a, b)``, a float if either is (``sym_max(2, 3.0)`` is 3.0, ``max(1, 1.0)`` and ``max(1.0, 1)`` both 1.0)."""
    _numbers_only(a, b)
    return builtins.float(builtins.max(a, b)) if isinstance(a, _FLOATS) or isinstance(b, _FLOATS) else builtins.max(a, b)


def sym_min(a, b):
    _numbers_only(a, b)
    return builtins.float(builtins.min(a, b)) if isinstance(a, _FLOATS) or isinstance(b, _FLOATS) else builtins.min(a, b)


def sym_not(a):
    return not a


def sym_ite(b, t, f):
    """``t if b else f``: ``b`` a bool, ``t`` and ``f`` of one type."""
    if not isinstance(b, builtins.bool):
        raise AssertionError(f"expected SymBool or bool, got {type(b)}")
    if type(t) is not type(f):
        raise AssertionError(f"type mismatch: {type(t)} vs {type(f)}")
    return t if b else f


def sym_sqrt(a):
    return math.sqrt(a)


def sym_sum(*args):
    """The sum of the numbers, given as arguments or as one list or tuple."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = args[0]
    return builtins.sum(args)


# ---- cond and while_loop ----------------------------------------------------------------------------
def _leaves(tree):
    """The leaves of nested dicts, lists and tuples (torch's pytree)."""
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in _leaves(value)]
    if isinstance(tree, (list, tuple)):
        return [leaf for value in tree for leaf in _leaves(value)]
    return [tree]


def cond(pred, true_fn, false_fn, operands=()):
    """``true_fn(*operands)`` if ``pred`` else ``false_fn(*operands)``; ``pred`` a bool or a one-element tensor."""
    if isinstance(pred, (builtins.bool, builtins.int, builtins.float)):  # (torch's eager case: no checks)
        return true_fn(*operands) if pred else false_fn(*operands)
    if not isinstance(pred, Tensor):
        raise RuntimeError(f"Expected pred to be bool or tensor, but got {pred}.")
    if pred.numel() != 1:
        raise RuntimeError(f"Expected pred to be bool or single-element tensor, but got {pred}.")
    if not callable(true_fn) or not callable(false_fn):
        raise RuntimeError("Expect both branches to be callable.")
    if not isinstance(operands, (tuple, list)) or not all(isinstance(t, Tensor) for t in _leaves(operands)):
        raise RuntimeError("Expect operands to be a tuple of possibly nested dict/list/tuple that only consists of "
                           f"tensor leaves, but got {operands}.")
    traced = [_branch_leaves(_traced("torch.cond", fn, operands)) for fn in (true_fn, false_fn)]
    if traced[0][0] != traced[1][0]:
        raise _uncaptured("torch.cond", "torch.cond: differing branch outputs",
                          "Expected branches to return the same pytree structure.", [_EAGER_HINT])
    for a, b in zip(traced[0][1], traced[1][1]):
        if isinstance(a, Tensor) and a.dtype != b.dtype:
            raise TorchRuntimeError(
                "RuntimeError when making fake tensor call\n  Explanation: Dynamo failed to run FX node with fake "
                "tensors: call_function cond: got RuntimeError(\"When merging two branches' output in torch.cond,  "
                f"expected same dtype but got torch.{a.dtype} and torch.{b.dtype}.\")\n{_EAGER_HINT}")
        if isinstance(a, Tensor) and _stride_order(a) != _stride_order(b):
            raise TorchRuntimeError(
                "RuntimeError when making fake tensor call\n  Explanation: Dynamo failed to run FX node with fake "
                "tensors: call_function cond: got RuntimeError(\"The sorted order of strides of the two branches' "
                "output doesn't match.this indicates the contiguousness of the two branches are different. True "
                f"branch has stride {a.stride()} but false branch has stride {b.stride()}.Consider using contiguous() "
                f"to make the two branches have the same contiguousness.\")\n{_EAGER_HINT}")
    return true_fn(*operands) if pred.item() else false_fn(*operands)


def _stride_order(t):
    """The dims of ``t`` from the largest stride down (dims of size 1 left out: no order), or None where its strides
    are not known."""
    try:
        strides = t.stride()
    except (RuntimeError, NotImplementedError):
        return None
    dims = [d for d in range(t.ndim) if t.shape[d] > 1]
    return sorted(dims, key=lambda d: -strides[d])


def while_loop(cond_fn, body_fn, carried_inputs):
    """``carried = body_fn(*carried)`` while ``cond_fn(*carried)``; the last ``carried`` (a tuple, or the body's
    list; tensors copied when the body never runs, as torch's)."""
    if not callable(cond_fn) or not callable(body_fn):
        raise RuntimeError("Expect cond_fn and body_fn to be callable.")
    leaves = _leaves(carried_inputs)
    if not all(isinstance(t, (Tensor, builtins.int)) for t in leaves):
        kinds = tuple(type(t) for t in leaves)
        raise AssertionError(f"{list(leaves)} can only be of ({Tensor}, {builtins.int}) but got {kinds}")
    if not isinstance(carried_inputs, (tuple, list)):
        raise RuntimeError(f"carried_inputs must be a tuple or list but got {type(carried_inputs)}")
    carried = tuple(carried_inputs)
    _checked_condition(_traced("torch.while_loop", cond_fn, carried))  # (torch traces both before it loops)
    _checked_body_outputs(_traced("torch.while_loop", body_fn, carried), carried)
    go_on = _checked_condition(cond_fn(*carried))
    if not go_on:
        return tuple(v.clone() if isinstance(v, Tensor) else v for v in carried)
    while go_on:
        out = body_fn(*carried)
        _checked_body_outputs(out, carried)
        carried = out
        go_on = _checked_condition(cond_fn(*carried))
    return carried


class UncapturedHigherOrderOpError(RuntimeError):
    """``torch._dynamo.exc.UncapturedHigherOrderOpError``: what torch's tracer of cond and while_loop refuses."""


class TorchRuntimeError(RuntimeError):
    """``torch._dynamo.exc.TorchRuntimeError``: an op that failed on torch's fake tensors while it traced."""


_EAGER_HINT = ("  Hint: Your code may result in an error when running in eager. Please double check that your code "
               "doesn't contain a similar error when actually running eager/uncompiled. You can do this by removing "
               "the `torch.compile` call, or by using `torch.compiler.set_stance(\"force_eager\")`. ")


def _uncaptured(op, title, explanation, hints):
    """torch's graph-break refusal of a higher-order op, in its words (its debug context left out)."""
    lines = [title, f"  Higher Order Operator: {op}", f"  Explanation: {explanation}"]
    lines += [h if h.startswith("  Hint:") else f"  Hint: {h}" for h in hints]
    return UncapturedHigherOrderOpError("This higher order operator doesn't work unless it is captured completely "
                                        "with torch.compile. Got graph break/error:\n\n" + "\n".join(lines))


def _traced(op, fn, operands):
    """``fn(*operands)`` as torch's tracer sees it before anything runs: on detached copies of the operands,
    recording nothing and drawing nothing (the CPU generator's state put back), refused where torch's tracer
    refuses an operand changed in place or an output that is an operand or a view of one."""
    copies = _copied(operands)
    inputs = [t for t in _leaves(copies) if isinstance(t, Tensor)]
    versions = [t._version for t in inputs]
    state = _random.get_rng_state()
    try:
        with no_grad():
            out = fn(*copies)
    finally:
        _random.set_rng_state(state)
    if any(t._version != v for t, v in zip(inputs, versions)):
        raise _uncaptured(op, "Encountered input mutation during higher order op tracing",
                          "Higher order ops do not support input mutation. Found in "
                          f"{op.split('.')[-1]}", ["Consider using the debug context to change user code to "
                                                  "avoid mutation.", "Please open an issue."])
    arrays = [t._array for t in inputs if type(t._array) is np.ndarray]
    for t in _leaves(out):
        if isinstance(t, Tensor) and type(t._array) is np.ndarray and t.numel() \
                and any(a.size and np.may_share_memory(t._array, a) for a in arrays):
            raise _uncaptured(op, "Encountered aliasing during higher order op tracing",
                              f"Higher order ops do not support aliasing. Found in {op.split('.')[-1]}",
                              ["Replace `return input` with `return input.clone()` to avoid aliasing.",
                               "Consider using the debug context to change user code to avoid aliasing.",
                               "Please open an issue."])
    return out


def _copied(value):
    """``value`` (tensors, numbers, nested tuples/lists/dicts) with each tensor a detached copy."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_copied(v) for v in value)
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    return value


def _branch_leaves(out):
    """A branch's output as torch compares two: its structure (a lone output as a 1-tuple) and its leaves, each a
    tensor or an int (another constant is torch's refusal)."""
    out = out if isinstance(out, tuple) else (out,)
    leaves = _leaves(out)
    for leaf in leaves:
        if not isinstance(leaf, Tensor) and (not isinstance(leaf, builtins.int) or isinstance(leaf, builtins.bool)):
            raise _uncaptured("torch.cond", "torch.cond: unsupported branch return type (constant non-int)",
                              "Constants returned from branches must be ints.", [_EAGER_HINT])
    return _structure(out), leaves


def _structure(value):
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_structure(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _structure(v)) for k, v in value.items()))
    return "leaf"


def _checked_body_outputs(out, carried):
    """torch's check of what body_fn returns against what it carries: as many outputs, each of the same kind
    (tensor or int), shape and dtype."""
    outputs = list(out) if isinstance(out, (tuple, list)) else [out]
    if len(outputs) != len(carried):
        raise UncapturedHigherOrderOpError(
            f"Expected body_fn_output and carried_inputs to have same number of outputs but got "
            f"lhs:{_described(outputs)} and rhs:{_described(carried)}\n  Higher Order Operator: torch.while_loop")
    for i, (lhs, rhs) in enumerate(zip(outputs, carried)):
        difference = _metadata_difference(lhs, rhs)
        if difference:
            raise UncapturedHigherOrderOpError(
                f"Expected body_fn_output and carried_inputs to have same metadata but found:\npair[{i}] differ in "
                f"{difference}, where lhs is {_described([lhs])[1:-1]} and rhs is {_described([rhs])[1:-1]}\n  "
                f"Higher Order Operator: torch.while_loop")


def _metadata_difference(lhs, rhs):
    if isinstance(lhs, Tensor) != isinstance(rhs, Tensor):
        return f"type: {_described([lhs])[1:-1]} vs {_described([rhs])[1:-1]}"
    if not isinstance(lhs, Tensor):
        return None
    if tuple(lhs.shape) != tuple(rhs.shape):
        return f"'shape: torch.Size({list(lhs.shape)}) vs torch.Size({list(rhs.shape)})'"
    if lhs.dtype != rhs.dtype:
        return f"'dtype: torch.{lhs.dtype} vs torch.{rhs.dtype}'"
    return None


def _described(values):
    """Values as torch's tracer prints them (its fake tensors: sizes and a dtype other than float32)."""
    def one(v):
        if not isinstance(v, Tensor):
            return repr(v)
        dtype = "" if str(v.dtype) == "float32" else f", dtype=torch.{v.dtype}"
        return f"FakeTensor(..., size={tuple(v.shape)}{dtype})"
    return "[" + ", ".join(one(v) for v in values) + "]"


def _checked_condition(pred):
    """torch's check of what cond_fn returns: a bool, or a 0-d bool tensor."""
    if isinstance(pred, builtins.bool):
        return pred
    if isinstance(pred, Tensor) and pred.ndim == 0 and str(pred.dtype) == "bool":
        return builtins.bool(pred.item())
    got = f"torch.Size({list(pred.shape)})" if isinstance(pred, Tensor) else type(pred).__name__
    raise _uncaptured("torch.while_loop", "torch.while_loop: unsupported cond_fn return type",
                      f"Expected cond_fn to return a scalar tensor or a bool but got {got}.", [_EAGER_HINT])


# ---- torch.fork / torch.wait (TorchScript's futures, eagerly) ------------------------------------------
def fork(func, *args, **kwargs):
    """``func(*args, **kwargs)`` run now, as torch's eager fork runs it; a completed ``Future`` of its result."""
    from .futures import Future
    future = Future()
    future.set_result(func(*args, **kwargs))
    return future


def wait(future):
    """The value of a Future ``fork`` returned."""
    return future.wait()
