"""``torch.autograd.forward_ad``: dual tensors, forward-mode AD (``dual_level``, ``make_dual``, ``unpack_dual``).

A dual tensor is an ordinary Tensor with a tangent beside it, kept by the open level (``_Level``, by the
tensor's identity: no slot on Tensor, and every tangent goes when the level exits, as torch's). While a level
is open, tensor.py's ``Function.apply`` hands each op call to ``dual_apply`` here: an op with a dual input
runs as always (same value, graph and views), and its result gets the tangent J t of the dual inputs'
tangents -- in or out of grad mode, as torch's.

One rule gives every op's J t: the double-vjp trick on the op's own recorded backward (ops/higher_order.py,
create_graph=True's pass). ``u -> J^T u`` is linear in ``u``, so the gradient of ``<J^T u, t>`` with respect
to ``u`` is ``J t``. torch writes a forward formula per op (derivatives.yaml's ``result:``); the double-vjp
runs the same arithmetic transposed (mul: t_a*b + t_b*a; matmul: t_A@B + A@t_B; softmax: y*(t - sum(y*t))),
so float64 tangents agree with torch's to rounding and float32 ones closely -- one rule for every op the
recorded backward covers, instead of a second formula per op to keep in step with the first. It costs the
op's forward once more (on the same random draws: the generators are rewound) and two small backward passes
(at u = 1: a backward written with log|u|, logcumsumexp's, has no derivative at 0). A view op's tangent is
the same view of the tangent (torch's: an in-place change of a view's tangent reaches its base's), as is a
linear op's where the recorded pass has no backward (``_LINEAR_OPS``: torch.fft); ``_TORCH_FORMULAS`` holds
torch's formula for the few others (polar). With grad mode on and something requiring grad, the tangent is
recorded, so a backward through it works (reverse over forward); it requires grad only where it depends on
something that does (torch's also where its formula merely mentions such a primal: ``2 * d``'s tangent). Where torch has no forward formula (the op calls ``tensor.no_forward_formula``),
or minilora's recorded backward has none, the op refuses with torch's NotImplementedError naming it.
"""
import contextlib
import re
import weakref
from typing import NamedTuple, Optional

import numpy as np

from . import autograd, factories, random
from . import tensor as _tensor
from .ops import higher_order
from .ops import shape as S
from .tensor import Tensor, enable_grad, no_grad

__all__ = ["UnpackedDualTensor", "enter_dual_level", "exit_dual_level", "make_dual", "unpack_dual", "dual_level"]

_current_level = -1  # torch's global: the open level's number, -1 when none
_level = None  # the open _Level
_functorch_forward = 0  # torch.func's forward-mode transforms running (torch's take its one dual level)
_vmapped = 0  # torch.func.vmap calls running (torch has no batching rule for make_dual)
_composed = {}  # {torch op name: calls running that compute it from ops with forward formulas} (see composed)


class _Level:
    """The open dual level: each dual tensor's tangent, by the tensor's identity (an entry goes with its
    tensor), and whether a tangent is being computed (then the ops run inside are plain ops)."""

    def __init__(self):
        self.tangents = {}  # id(tensor) -> (weak reference to the tensor, its tangent)
        self.busy = False

    def tangent(self, t):
        entry = self.tangents.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def set(self, t, tangent):
        key, tangents = id(t), self.tangents

        def forget(ref):
            if key in tangents and tangents[key][0] is ref:
                del tangents[key]
        tangents[key] = (weakref.ref(t, forget), tangent)

    @contextlib.contextmanager
    def plain(self):
        """Ops inside run without tangents (computing one; a user Function's forward, as torch's)."""
        before, self.busy = self.busy, True
        try:
            yield
        finally:
            self.busy = before


# ---- the user API, torch's names and words ------------------------------------------------------------------
def enter_dual_level():
    """Open the (one) forward-AD level; returns its number, 0."""
    global _current_level, _level
    if _level is not None or _functorch_forward:
        raise RuntimeError("Nested forward mode AD is not supported at the moment")
    _level, _current_level = _Level(), 0
    _tensor._forward_ad = _Hooks
    return 0


def exit_dual_level(*, level=None):
    """Close the level: every tangent made in it is dropped (``unpack_dual`` then gives None)."""
    global _current_level, _level
    level = _current_level if level is None else level
    if level != _current_level:
        raise RuntimeError("Trying to exit a forward AD level that was not the last one that was created. This is "
                           "not supported.")
    if level < 0:
        raise RuntimeError("Dual level must be a positive number.")
    _tensor._forward_ad = None
    _level, _current_level = None, -1


class dual_level:
    """``with dual_level():`` -- the context (or decorator) forward-AD computation runs in."""

    def __enter__(self):
        return enter_dual_level()

    def __exit__(self, *exc):
        exit_dual_level()

    def __call__(self, fn):
        return _tensor._decorate(fn, dual_level)  # (a fresh context per call)


def _the_level(level):
    if level is not None and level != _current_level:
        raise RuntimeError(f"Invalid level {level}: minilora has one forward AD level, {_current_level}")


def make_dual(tensor, tangent, *, level=None):
    """A new tensor aliased to ``tensor`` (a view of it, in its graph) carrying ``tangent``: that tensor itself
    where it is laid out as ``tensor``, else a copy laid out as ``tensor`` (_in_layout_of, torch's rule)."""
    level = _current_level if level is None else level
    if level < 0:
        raise RuntimeError("Trying to create a dual Tensor for forward AD but no level exists, make sure to "
                           "enter_dual_level() first.")
    _the_level(level)
    if _vmapped:
        raise RuntimeError("Batching rule not implemented for aten::_make_dual; the fallback path doesn't work on "
                           "out= or view ops.")
    if not (tensor.is_floating_point() or tensor.is_complex()):
        raise ValueError(f"Expected primal to be floating point or complex, but got: torch.{tensor.dtype}")
    if not (tangent.is_floating_point() or tangent.is_complex()):
        raise ValueError(f"Expected tangent to be floating point or complex, but got: torch.{tangent.dtype}")
    if tuple(tangent.shape) != tuple(tensor.shape):
        raise RuntimeError(f"Trying to set a forward gradient that has a different size than that of the original "
                           f"Tensor, this is not supported. Tensor is of size {list(tensor.shape)} while the given "
                           f"forward gradient is of size {list(tangent.shape)}.")
    if _level.tangent(tensor) is not None:
        raise RuntimeError("Making a dual Tensor based on a Tensor that already has a forward gradient at the same "
                           f"level {level} is not supported.")
    if _level.tangent(tangent) is not None:
        raise RuntimeError(f"Setting a forward grad that itself has a forward gradient at the same level{level} is not "
                           "supported.")
    with _level.plain():
        dual = tensor.view_as(tensor)
        tangent = _in_layout_of(tensor, tangent)
    _level.set(dual, tangent)
    return dual


def _layout(t):
    """What torch's has_same_meta compares: sizes, strides (but of dimensions of size 0 or 1), storage offset and
    the storage's size; None where minilora cannot tell the strides."""
    try:
        strides, storage = t.stride(), S._flat_storage(t._array).size
    except NotImplementedError:
        return None
    return tuple(t.shape), tuple(None if n <= 1 else s for n, s in zip(t.shape, strides)), t.storage_offset(), storage


def _in_layout_of(primal, tangent):
    """The tangent make_dual keeps, as torch's set_fw_grad: the tangent itself where it is laid out as the primal
    (the same strides, offset and storage size), else a copy in a fresh storage of the primal's storage size, at the
    primal's strides and offset -- so a later in-place change of the caller's tangent (``tangent.T``, a slice of a
    bigger tensor) no longer reaches the dual's, and the tangent has the primal's strides."""
    layout = _layout(primal)
    if layout is not None and layout == _layout(tangent):
        return tangent
    if layout is None:  # (strides minilora does not follow: a fresh contiguous copy)
        return tangent.clone(memory_format=factories.contiguous_format)
    sizes, strides, offset, storage = layout
    strides = primal.stride()
    if any(n > 1 and s == 0 for n, s in zip(sizes, strides)):  # (an expanded primal: torch's copy_ refuses)
        raise RuntimeError("unsupported operation: more than one element of the written-to tensor refers to a single "
                           "memory location. Please clone() the tensor before performing the operation.")
    fresh = S.as_strided(factories.zeros(storage, dtype=tangent.dtype, device=tangent.device), sizes, strides,
                         offset).detach()  # (not a view in the graph: the copy is torch's CopyBackwards)
    return fresh.copy_(tangent)


@contextlib.contextmanager
def functorch_forward():
    """torch.func.jvp / jacfwd / hessian / linearize running ``func``: they hold torch's one forward-AD level, so
    neither may run inside a dual level nor open one (torch's words)."""
    global _functorch_forward
    if _level is not None:
        raise RuntimeError("Nested forward mode AD is not supported at the moment")
    _functorch_forward += 1
    try:
        yield
    finally:
        _functorch_forward -= 1


@contextlib.contextmanager
def vmapped():
    """torch.func.vmap running ``func``: make_dual inside refuses, as torch's (no batching rule)."""
    global _vmapped
    _vmapped += 1
    try:
        yield
    finally:
        _vmapped -= 1


def inside_vmap():
    """Whether a torch.func.vmap call is running ``func`` (batch norm's running statistics refuse it then)."""
    return _vmapped > 0


class UnpackedDualTensor(NamedTuple):
    """``unpack_dual``'s result: the primal and the tangent (None for a tensor that is not dual)."""
    primal: Tensor
    tangent: Optional[Tensor]


def unpack_dual(tensor, *, level=None):
    """``(primal, tangent)``: the primal a view of ``tensor`` without a tangent, the tangent as is."""
    level = _current_level if level is None else level
    if level < 0:
        return UnpackedDualTensor(tensor, None)
    _the_level(level)
    with _level.plain():
        primal = tensor.view_as(tensor)
    return UnpackedDualTensor(primal, _level.tangent(tensor))


# ---- tangents through the ops ---------------------------------------------------------------------------------
def _not_implemented(name):
    """torch's words for an op without a forward formula (``aten::`` names: a non-differentiable op's)."""
    if name.startswith("aten::"):
        return NotImplementedError(f"Trying to use forward AD with {name} that does not support it.")
    return NotImplementedError(f"Trying to use forward AD with {name} that does not support it because it has not "
                               "been implemented yet.\nPlease file an issue to PyTorch at https://github.com/pytorch/"
                               "pytorch/issues/new?template=feature-request.yml so that we can prioritize its "
                               "implementation or submit a PR adding the implementation to derivatives.yaml")


def refuse_duals(name, tensors):
    """``tensor.no_forward_formula``'s check: the op ``name`` (torch has no forward formula for it) refuses a dual
    input, as torch's."""
    level = _level
    if level.busy or _composed.get(name):
        return
    if any(isinstance(t, Tensor) and level.tangent(t) is not None for t in tensors):
        raise _not_implemented(name)


@contextlib.contextmanager
def composed(name):
    """Inside, torch's op ``name`` takes dual inputs: the caller stands for code that computes it from ops torch
    differentiates forward (transformers' eager attention: matmuls and a softmax, where its 'sdpa' runs torch's
    flash kernel, which refuses)."""
    _composed[name] = _composed.get(name, 0) + 1
    try:
        yield
    finally:
        _composed[name] -= 1


def _generators(options):
    """The generators an op may draw from: the default one and any passed to it."""
    given = [value for value in options.values() if isinstance(value, random.Generator)]
    return [random.default_generator] + given


@contextlib.contextmanager
def _same_draws(generators, states):
    """Run a block on the random draws an earlier run made (the generators rewound to ``states``), leaving
    them where that run left them."""
    after = [g.get_state() for g in generators]
    for g, state in zip(generators, states):
        g.set_state(state)
    try:
        yield
    finally:
        for g, state in zip(generators, after):
            g.set_state(state)


def _is_differentiable(t):
    return isinstance(t, Tensor) and (t.is_floating_point() or t.is_complex())


def dual_apply(cls, inputs, options):
    """``cls.apply(*inputs)`` with the result's tangent, when an input is dual; None otherwise (then
    Function.apply runs the op itself)."""
    level = _level
    if level.busy:
        return None
    tangents = [level.tangent(x) if isinstance(x, Tensor) else None for x in inputs]
    if all(t is None for t in tangents):
        return None
    with level.plain():
        generators = _generators(options)
        states = [g.get_state() for g in generators]
        result = cls.apply(*inputs, **options)
        if _is_differentiable(result):
            tangent = _view_tangent(cls, inputs, options, tangents, result)
            if tangent is None and cls.__name__ in _TORCH_FORMULAS:
                tangent = _TORCH_FORMULAS[cls.__name__](inputs, tangents)
            if tangent is None:
                with _same_draws(generators, states):
                    tangent = _jvp(cls, inputs, options, tangents, result)
            level.set(result, tangent)
    return result


def _view_tangent(cls, inputs, options, tangents, result):
    """The tangent of a view op, or of an op linear in its one dual input (torch.fft's transforms, whose recorded
    backward the real-only create_graph pass lacks): the same op on the tangent (a view of it for a view, so an
    in-place change of the view's tangent reaches its base's). None for any other op."""
    if sum(t is not None for t in tangents) != 1:
        return None
    k = next(i for i, t in enumerate(tangents) if t is not None)
    if tangents[k].shape != inputs[k].shape:
        return None
    viewed = inputs[k] if inputs[k]._base is None else inputs[k]._base
    if cls.__name__ not in _LINEAR_OPS and (result._base is None or viewed is not result._base):
        return None
    return cls.apply(*inputs[:k], tangents[k], *inputs[k + 1:], **options)


# (complex_numbers.FFT: fftn, ifftn, rfftn, irfftn, each linear over the reals; max_unpool: torch's auto_linear, the
# unpooling of the tangent, where the double-vjp would add the values of a repeated index)
_LINEAR_OPS = {"FFT", "MaxUnpool2d"}


def _polar_jvp(inputs, tangents):
    """torch's formula for polar(abs, angle) (its recorded backward is missing from the real-only create_graph
    pass): ``complex(abs_t cos - angle_t abs sin, abs_t sin + angle_t abs cos)``."""
    from .complex_numbers import complex as _complex
    (r, theta), (r_t, theta_t) = inputs, [autograd._zeros_like(x) if t is None else t for x, t in zip(inputs, tangents)]
    cos, sin = theta.cos(), theta.sin()
    return _complex(r_t * cos - theta_t * r * sin, r_t * sin + theta_t * r * cos)


_TORCH_FORMULAS = {"Polar": _polar_jvp}  # an op's forward formula, where the double-vjp cannot run


def _jvp(cls, inputs, options, tangents, result):
    """J t by the double-vjp trick on the op's recorded backward, the op run again on its dual inputs as
    variables (aliases of the inputs where the tangent must stay differentiable with respect to them)."""
    record = _tensor.is_grad_enabled() and (result.requires_grad or any(
        t is not None and t.requires_grad for t in tangents))
    variables = {}  # id(input) -> (the variable it is differentiated as, its tangent)
    run = []
    for x, t in zip(inputs, tangents):
        if t is None:
            run.append(x)
            continue
        if id(x) not in variables:
            # (an alias: differentiating with respect to the input itself would also follow a path from one
            # input to another, as in sin(d) * d)
            leaf = x.view_as(x) if record and x.requires_grad else Tensor._make(x._array, x._device, True, None)
            variables[id(x)] = (leaf, t)
        run.append(variables[id(x)][0])
    with enable_grad():
        out = cls.apply(*run, **options)
    leaves, vectors = zip(*variables.values())
    try:  # (at u = ones: a backward written with log|u| (logcumsumexp's) has no derivative at u = 0)
        (tangent,) = autograd._jvp_by_double_vjp([out], list(leaves), list(vectors), record, False, _ones_like)
    except higher_order.NotDifferentiableBackward:
        raise _not_implemented(_op_name(out.grad_fn)) from None
    return tangent


def _ones_like(t):
    return Tensor._make(t._device.xp.ones_like(t._array), t._device, False, None)


def _op_name(node):
    """An op's name in torch's spelling, from its node's (``LinalgSvdBackward0``: ``linalg_svd``)."""
    words = re.sub(r"Backward\d*$", "", node.name().split("::")[-1])
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", words).lower()


# ---- in-place ops: the tangent follows the write ---------------------------------------------------------------
def writes_dual(target, args):
    """Does an in-place write into ``target`` involve a tangent (``target``'s own, or an argument's)?"""
    level = _level
    if level.busy:
        return False
    return level.tangent(target) is not None or any(
        isinstance(a, Tensor) and level.tangent(a) is not None for a in args)


def dual_inplace(target, op, args, kwargs, cast):
    """``target.op_(*args)`` on dual tensors: the new tangent is the out-of-place op's, written into
    ``target``'s tangent in place (as torch's in-place formulas update it: the tensor given to make_dual
    changes, and so does a base's tangent when ``target`` is a view of it)."""
    level = _level
    generators = _generators(kwargs)
    states = [g.get_state() for g in generators]
    new = op(target, *args, **kwargs)
    new_tangent = level.tangent(new)
    with level.plain(), _same_draws(generators, states):
        target._inplace(op, *args, cast=cast, **kwargs)
    _write_tangent(target, new_tangent)
    return target


def _write_tangent(target, new):
    level = _level
    with level.plain():
        if new is None:
            new = autograd._zeros_like(target)
        old = level.tangent(target)
        if old is None and target._base is not None:  # a view of a tensor without one: its base gets zeros
            old = _view_of_base_tangent(target)
        if old is None:
            level.set(target, new.to(target.dtype) if new.dtype != target.dtype else new)
        elif old.requires_grad or new.requires_grad:
            old.copy_(new)
        else:
            old._write(new._array.astype(old._array.dtype, copy=False), True)


def _view_of_base_tangent(view):
    """Zeros as the tangent of ``view``'s base, and the same view of them as ``view``'s (None where the
    view's chain of view ops is not known)."""
    chain, t = [], view
    while t._base is not None:
        if t._view is None:
            return None
        chain.append(t._view)
        t = t._view[1][t._view[3]]
    base = view._base
    tangent = _level.tangent(base)
    if tangent is None:
        tangent = autograd._zeros_like(base)
        _level.set(base, tangent)
    for fn, inputs, options, i, *_ in reversed(chain):
        tangent = fn.apply(*inputs[:i], tangent, *inputs[i + 1:], **options)
    _level.set(view, tangent)
    return tangent


# ---- a user's autograd.Function: its own jvp ----------------------------------------------------------------
def tangents_of(args):
    """The tangents of a user Function's arguments (None for each that is not dual); None when none is."""
    level = _level
    if level.busy:
        return None
    tangents = [level.tangent(a) if isinstance(a, Tensor) else None for a in args]
    return tangents if any(t is not None for t in tangents) else None


def plain():
    return _level.plain()


def user_jvp(cls, ctx, tangents, result):
    """Give a user Function's outputs the tangents its ``jvp(ctx, *tangents)`` returns (torch's rule: a
    Function without one refuses)."""
    if cls.jvp is autograd.Function.jvp:
        raise NotImplementedError("You must implement the jvp function for custom autograd.Function to use it with "
                                  "forward mode AD.")
    with _level.plain():
        ctx._in_jvp = True
        try:
            found = cls.jvp(ctx, *tangents)
        finally:
            ctx._in_jvp = False
    outputs = result if isinstance(result, tuple) else (result,)
    found = found if isinstance(found, tuple) else (found,)
    if len(found) != len(outputs):
        raise RuntimeError(f"function {cls.__name__}_jvp returned an incorrect number of forward gradients (expected "
                           f"{len(outputs)}, got {len(found)})")
    for out, tangent in zip(outputs, found):
        if isinstance(out, Tensor) and tangent is not None:
            _level.set(out, tangent)


class _Hooks:
    """What tensor.py and autograd.py call while a level is open (``tensor._forward_ad``)."""
    dual_apply = staticmethod(dual_apply)
    tangent = staticmethod(lambda t: _level.tangent(t))
    refuse_duals = staticmethod(refuse_duals)
    writes_dual = staticmethod(writes_dual)
    dual_inplace = staticmethod(dual_inplace)
    tangents_of = staticmethod(tangents_of)
    plain = staticmethod(plain)
    user_jvp = staticmethod(user_jvp)


# ---- gradcheck(check_forward_ad=True) --------------------------------------------------------------------------
def jacobian_mismatch(func, inputs, eps, atol, rtol):
    """torch's forward-mode gradcheck: each column of each output's Jacobian by forward AD (the input made dual
    with a one-hot tangent) against central differences, for every float64 input that requires grad. Returns
    torch's words for the first mismatch, or None."""
    for i, x in enumerate(inputs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        for position in np.ndindex(x.shape):
            analytic, numeric = _forward_column(func, inputs, i, position), _numeric_column(func, inputs, i, position,
                                                                                           eps)
            for k, (a, n) in enumerate(zip(analytic, numeric)):
                if not np.allclose(a, n, rtol=rtol, atol=atol):
                    return (f"Jacobian computed with forward mode mismatch for output {k} with respect to input {i},"
                            f"\nnumerical:{n}\nanalytical:{a}\n")
    return None


def _outputs(result):
    return [t for t in (result if isinstance(result, tuple) else (result,)) if isinstance(t, Tensor)]


def _forward_column(func, inputs, i, position):
    x = inputs[i]
    one_hot = x._device.xp.zeros(x.shape, x._array.dtype)
    one_hot[position] = 1
    with dual_level():
        args = list(inputs)
        # (made in grad mode, from a leaf that requires grad as the input does: gradgradcheck(check_fwd_over_rev=True)'s
        # function differentiates with respect to it, in grad mode of its own)
        args[i] = make_dual(x.detach().requires_grad_(x.requires_grad), Tensor._make(one_hot, x._device, False, None))
        with no_grad():
            outputs = _outputs(func(*args))
        columns = []
        for out in outputs:
            tangent = unpack_dual(out).tangent
            columns.append(np.zeros(out.shape) if tangent is None else tangent.numpy(force=True).astype(np.float64))
    return columns


def _numeric_column(func, inputs, i, position, eps):
    array = inputs[i]._array
    original = array[position].item()
    values = []
    with no_grad():
        for step in (eps, -eps):
            array[position] = original + step
            values.append([out.numpy(force=True).astype(np.float64) for out in _outputs(func(*inputs))])
    array[position] = original
    return [(plus - minus) / (2 * eps) for plus, minus in zip(*values)]
