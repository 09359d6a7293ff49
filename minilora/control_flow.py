"""torch's functions for code that torch.compile traces, run eagerly: the ``sym_*`` helpers on plain numbers,
``torch.cond`` / ``torch.while_loop`` and TorchScript's ``torch.fork`` / ``torch.wait``.

    n = torch.sym_int(size / 2)                  # transformers calls these on Python numbers
    y = torch.cond(x.sum() > 0, lambda x: x.sin(), lambda x: x.cos(), (x,))
    i, x = torch.while_loop(lambda i, x: i < 3, lambda i, x: (i + 1, x * 2), (torch.tensor(0), x))
    torch.wait(torch.fork(f, x))                 # f(x): run now, a completed Future

minilora compiles nothing (minilora/compiler.py): there are no symbolic sizes, so each ``sym_*`` is its plain
Python meaning with torch's promotions and checks, ``cond`` runs the branch ``pred`` chooses and ``while_loop``
loops in Python, each after torch's own argument checks (in its words). torch traces both branches and the body
first and refuses what its tracer cannot capture (branches whose outputs differ in shape, a body returning an input
unchanged); minilora runs only what is asked, so such code runs here where torch refuses it.
"""
import builtins
import math

import numpy as np

from .tensor import Tensor

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
    return true_fn(*operands) if pred.item() else false_fn(*operands)


def while_loop(cond_fn, body_fn, carried_inputs):
    """``carried = body_fn(*carried)`` while ``cond_fn(*carried)``; the last ``carried``, a tuple (tensors copied
    when the body never runs, as torch's)."""
    if not callable(cond_fn) or not callable(body_fn):
        raise RuntimeError("Expect cond_fn and body_fn to be callable.")
    leaves = _leaves(carried_inputs)
    if not all(isinstance(t, (Tensor, builtins.int)) for t in leaves):
        kinds = tuple(type(t) for t in leaves)
        raise AssertionError(f"{list(leaves)} can only be of ({Tensor}, {builtins.int}) but got {kinds}")
    if not isinstance(carried_inputs, (tuple, list)):
        raise RuntimeError(f"carried_inputs must be a tuple or list but got {type(carried_inputs)}")
    carried = tuple(carried_inputs)
    go_on = _checked_condition(cond_fn(*carried))
    if not go_on:
        return tuple(v.clone() if isinstance(v, Tensor) else v for v in carried)
    while go_on:
        out = body_fn(*carried)
        if not isinstance(out, tuple):
            raise AssertionError(f"body_fn should return a tuple but got {type(out)}")
        if len(out) != len(carried_inputs):
            raise AssertionError(f"body_fn should return the same number of elements as carried_inputs, got "
                                 f"{len(out)} vs {len(carried_inputs)}")
        carried = out
        go_on = _checked_condition(cond_fn(*carried))
    return carried


def _checked_condition(pred):
    """torch's check of what cond_fn returns: a bool, or a 0-d bool tensor."""
    if isinstance(pred, builtins.bool):
        return pred
    if isinstance(pred, Tensor) and pred.ndim == 0 and str(pred.dtype) == "bool":
        return builtins.bool(pred.item())
    raise RuntimeError(f"cond_fn must return a boolean scalar tensor or a boolean but got {pred}")


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
