"""torch.autograd on minilora's engine: ``grad``, ``backward`` and ``Function`` for users.

``grad(outputs, inputs)`` runs the same backward pass as ``Tensor.backward`` (``_run_backward`` in
tensor.py) but hands it a store that keeps the gradients of the chosen ``inputs`` and returns them,
instead of adding into every leaf's ``.grad``. With ``create_graph=True`` both run the recorded pass of
minilora/ops/higher_order.py instead, whose gradients are tensors with graphs of their own (gradient
penalties, Hessian-vector products; ``functional.hessian`` / ``hvp`` / ``vhp``, ``jvp``'s double-vjp,
``gradgradcheck`` build on it).

A user's ``Function`` (forward/backward on Tensors, as torch's) is not a second engine: ``apply`` runs
the user's forward without recording, then records ordinary ops of tensor.py's engine: one node for
the call (``_UserCall``, on the inputs), whose backward calls the user's backward once, and one node
per output (``_UserOutput``) that hands its gradient to it.
"""
import abc
import sys
import types
import weakref

import numpy as np

from . import parallel, testing
from . import tensor as _tensor
from .device import device_errors_as_torch
from .ops import higher_order
from .interrupts import held_ctrl_c
from .tensor import Tensor, _run_backward, enable_grad, inference_mode, no_grad, set_grad_enabled  # noqa: F401
from .tensor import refuse_string_flag


class _VariableType(type):
    """``torch.autograd.Variable``: merged into Tensor since torch 0.4, kept for old code. Every tensor
    is one (``isinstance``); calling it gives ``data`` detached, sharing its values, requiring grad
    when asked. ``volatile`` does nothing but warn, as torch's."""

    def __instancecheck__(cls, obj):
        return isinstance(obj, Tensor)

    def __call__(cls, data=None, requires_grad=False, volatile=False):
        if volatile:
            _tensor.warn_at_caller("volatile was removed and now has no effect. Use `with torch.no_grad():` "
                                   "instead.")
        if data is None:
            return Tensor()
        if not isinstance(data, Tensor):
            raise TypeError(f"Variable data has to be a tensor, but got {type(data).__name__}")
        return data.detach().requires_grad_(bool(requires_grad))


class Variable(metaclass=_VariableType):
    """``torch.autograd.Variable(t, requires_grad=True)``, old code's spelling (see ``_VariableType``)."""


class _CaptureStore:
    """Collects the gradients of the wanted tensors; every other gradient is dropped (torch's grad
    leaves ``.grad`` alone). Leaves arrive through ``add``, non-leaves through ``add_node``."""

    def __init__(self, inputs):
        self.leaves = {id(t): i for i, t in enumerate(inputs) if t._ctx is None}
        self.nodes = {id(t._ctx): i for i, t in enumerate(inputs) if t._ctx is not None}
        self.grads = [None] * len(inputs)

    def _put(self, i, g):
        self.grads[i] = g.copy() if self.grads[i] is None else self.grads[i] + g

    def add(self, t, g):
        i = self.leaves.get(id(t))
        if i is not None:
            self._put(i, g)
        elif t._ctx is not None:  # a retain_grad() tensor on the way: its .grad fills, as torch's grad() does
            self._retain(t, g)

    @staticmethod
    def _retain(t, g):
        t._grad = Tensor._make(g.copy(), t._device, False, None) if t._grad is None else t._grad + g

    def add_node(self, ctx, g):
        self._put(self.nodes[id(ctx)], g)


class _GraphCaptureStore(_CaptureStore):
    """The same for a recorded pass: the gradients are tensors, summed with ops (so, in the graph)."""

    def _put(self, i, g):
        self.grads[i] = g if self.grads[i] is None else self.grads[i] + g

    @staticmethod
    def _retain(t, g):
        t._grad = g if t._grad is None else t._grad + g


def _zeros_like(t):
    """Zeros of ``t``'s shape, dtype and device (not ``t * 0``: that is -0.0 or nan where t is
    negative or infinite)."""
    return Tensor._make(t._device.xp.zeros_like(t._array), t._device, False, None)


def _as_tuple(x):
    return (x,) if isinstance(x, Tensor) else tuple(x)


def _seed(output, grad_output, index=0):
    """The gradient the pass starts from: ones for a scalar, else the caller's, shape-checked."""
    xp = output._device.xp
    if grad_output is None:
        if output._array.size != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        return xp.ones_like(output._array)
    array = grad_output._array if isinstance(grad_output, Tensor) else xp.asarray(grad_output)
    if array.shape != output._array.shape:
        raise _tensor.shape_mismatch(array.shape, output.shape, index)
    return array.astype(output._array.dtype, copy=False)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """torch.autograd.grad: the sum of d(outputs)/d(inputs), as a tuple, without touching ``.grad``."""
    if str in (retain_graph.__class__, create_graph.__class__, allow_unused.__class__):
        refuse_string_flag()
    if is_grads_batched:
        raise NotImplementedError("grad(is_grads_batched=True) is not supported")
    if materialize_grads and allow_unused is False:
        raise ValueError("Expected allow_unused to be True or not passed when materialize_grads=True, "
                         "but got: allow_unused=False.")
    allow_unused = bool(allow_unused) or materialize_grads
    outputs, inputs = _as_tuple(outputs), _as_tuple(inputs)
    if grad_outputs is None:
        grad_outputs = (None,) * len(outputs)
    else:
        grad_outputs = _as_tuple(grad_outputs) if not isinstance(grad_outputs, Tensor) else (grad_outputs,)
        if len(grad_outputs) != len(outputs):
            raise RuntimeError(f"grad requires one grad_output per output: got {len(grad_outputs)} "
                               f"grad_outputs and {len(outputs)} outputs")
    for k, out in enumerate(outputs):  # (the outputs first, as torch's: its message names the first one)
        _refuse_no_grad_fn(out, k)
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    if create_graph:  # a recorded pass (minilora/ops/higher_order.py); the graph kept unless told otherwise
        store = _GraphCaptureStore(inputs)
        seeds = [higher_order.seed(out, go, k) for k, (out, go) in enumerate(zip(outputs, grad_outputs))]
        with _tensor.backward_over_inputs(True):
            higher_order.run_backward_graph(outputs, seeds, retain_graph is None or bool(retain_graph), store)
        return _grad_results(inputs, store.grads, allow_unused, materialize_grads)
    store = _CaptureStore(inputs)
    last = len(outputs) - 1
    with parallel.computing(), _tensor.backward_over_inputs(True), device_errors_as_torch():
        for k, (out, go) in enumerate(zip(outputs, grad_outputs)):
            # the graph may be shared by the outputs: free it only after the last one
            _run_backward(out, _seed(out, go, k), bool(retain_graph) or k < last, store)
    return _grad_results(inputs, store.grads, allow_unused, materialize_grads)


def _refuse_no_grad_fn(out, k):
    if not out.requires_grad:
        raise RuntimeError(f"element {k} of tensors does not require grad and does not have a grad_fn")


def _grad_results(inputs, grads, allow_unused, materialize_grads):
    """grad()'s answer: one tensor per input (arrays from the plain pass, tensors from a recorded one)."""
    result = []
    for index, (t, g) in enumerate(zip(inputs, grads)):
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"The differentiated Tensor at index {index} appears to not have been used "
                                   "in the graph. Set allow_unused=True if this is the desired behavior.")
            result.append(_zeros_like(t) if materialize_grads else None)
        else:
            result.append(g if isinstance(g, Tensor) else Tensor._make(g, t._device, False, None))
    return tuple(result)


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """torch.autograd.backward: ``Tensor.backward`` on each tensor, gradients summed into ``.grad``."""
    tensors = _as_tuple(tensors)
    if grad_tensors is None:
        grad_tensors = (None,) * len(tensors)
    else:
        grad_tensors = _as_tuple(grad_tensors) if not isinstance(grad_tensors, Tensor) else (grad_tensors,)
    last = len(tensors) - 1
    with held_ctrl_c():  # (torch's one engine call: a Ctrl-C lands after every tensor's pass)
        for k, (t, g) in enumerate(zip(tensors, grad_tensors)):
            t.backward(g, retain_graph=bool(retain_graph) or k < last, create_graph=create_graph,
                       inputs=inputs)


class FunctionCtx:
    """The ``ctx`` a user's forward and backward share (torch.autograd.function.FunctionCtx)."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.materialize_grads = True
        self.non_differentiable = ()
        self.dirty = ()
        self._saved = ()
        self._versions = ()

    def save_for_backward(self, *tensors):
        for i, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"save_for_backward can only save variables, but argument {i} is of type "
                                f"{type(t).__name__}")
        self._saved = tensors
        self._versions = tuple(None if t is None else t._version for t in tensors)

    def save_for_forward(self, *tensors):
        """Tensors for ``jvp`` (where ``ctx.saved_tensors`` gives them, as torch's)."""
        for i, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"save_for_forward expects all arguments to be tensors; but got argument {i} of "
                                f"type {type(t).__name__}")
        self._saved_for_forward = tensors

    @property
    def saved_tensors(self):
        if getattr(self, "_in_jvp", False):
            return getattr(self, "_saved_for_forward", ())
        # torch's version check: a saved tensor changed in place since would give a wrong gradient
        for i, (t, version) in enumerate(zip(self._saved, self._versions)):
            if t is not None and t._version != version:
                raise RuntimeError(f"one of the variables needed for gradient computation has been "
                                   f"modified by an inplace operation: [{t.dtype}{list(t.shape)}] is at "
                                   f"version {t._version}; expected version {version} instead.")
        return self._saved

    def mark_non_differentiable(self, *tensors):
        self.non_differentiable += tensors

    def mark_dirty(self, *tensors):
        """The inputs forward changed in place (and returns): they come back as themselves, now
        computed by this Function (torch's)."""
        self.dirty += tensors

    def set_materialize_grads(self, value):
        self.materialize_grads = bool(value)


class _Joint:
    """What the nodes of one call of a user's Function share: the Function, its ctx, its outputs, and
    the gradients the outputs have received in the current backward pass (None: none yet)."""

    prehooks = posthooks = None  # {handle id: hook} from y.grad_fn.register_prehook / register_hook (_CtxNode)

    def __init__(self, cls, user_ctx, outputs):
        self.cls, self.user_ctx, self.outputs = cls, user_ctx, outputs
        self.received = [None] * len(outputs)
        self.output_nodes = [None] * len(outputs)  # in a create_graph=True pass: the output nodes that ran

    def add_hook(self, kind, hook):
        """A hook on the call's node (``kind``: "prehooks" or "posthooks"): run by _UserCall, which sees every
        output's gradient at once, as torch's node."""
        if getattr(self, kind) is None:
            setattr(self, kind, {})
        hooks = getattr(self, kind)
        handle = _tensor.RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    def run_prehooks(self, device):
        """The node's pre-hooks: each sees one gradient per output (None where none arrived, before they are
        materialized as zeros) and may return replacements. Returns the grad_outputs its post-hooks see."""
        shown = tuple(None if g is None else Tensor._make(g, device, False, None) for g in self.received)
        for hook in list((self.prehooks or {}).values()):
            out = hook(shown)
            if out is not None:
                if len(out) != len(shown):
                    raise RuntimeError(f"hook '{getattr(hook, '__name__', hook)}' has returned an incorrect number "
                                       f"of values (got {len(out)}, but expected {len(shown)})")
                shown = tuple(out)
        self.received = [None if g is None else g._array for g in shown]
        return shown

    def run_posthooks(self, result, inputs, grad_outputs):
        """The node's post-hooks: each sees one gradient per tensor input (its next_functions) and the
        grad_outputs, and may return replacements for the former."""
        positions = [i for i, x in enumerate(inputs) if isinstance(x, Tensor)]
        result = list(result)
        for hook in list(self.posthooks.values()):
            out = hook(tuple(result[i] for i in positions), grad_outputs)
            if out is None:
                continue
            if len(out) != len(positions):
                raise RuntimeError(f"hook '{getattr(hook, '__name__', hook)}' has returned an incorrect number of "
                                   f"values (got {len(out)}, but expected {len(positions)})")
            for i, r in zip(positions, out):
                result[i] = r
        return tuple(result)

    def grads_for_backward(self):
        """One gradient per output, as torch hands them to backward: the one received, else zeros
        (None after ``ctx.set_materialize_grads(False)``, and always for a non-Tensor output)."""
        grads = []
        for out, g in zip(self.outputs, self.received):
            if g is not None:  # (a tensor already in a create_graph=True pass)
                grads.append(g if isinstance(g, Tensor) else Tensor._make(g, out._device, False, None))
            elif self.user_ctx.materialize_grads and isinstance(out, Tensor):
                grads.append(_zeros_like(out))
            else:
                grads.append(None)
        self.received = [None] * len(self.outputs)  # ready for the next pass (retain_graph)
        return grads


def _token(device):
    """The empty array that links a Function's output nodes to its call node (it carries no numbers)."""
    return device.xp.zeros((0,), dtype="float32")


class _UserCall(_tensor.Function):
    """The engine's node for one call of a user's Function, on its inputs. Its output is an empty
    token that every output node (``_UserOutput``) takes as input. The output nodes were made after
    it, so the engine runs all of them first: each leaves its gradient in the ``_Joint``, and this
    node then calls the user's backward once, with every output's gradient (torch's rule)."""
    meta_gradients = False  # (on meta too, torch runs this backward: minilora/ops/meta.py)

    @staticmethod
    def forward(ctx, *arrays, joint):
        ctx.joint = joint
        return _token(ctx.device)

    @staticmethod
    def backward(ctx, token_grad):
        joint = ctx.joint
        cls, user_ctx = joint.cls, joint.user_ctx
        hooked = joint.prehooks or joint.posthooks
        grad_outputs = joint.run_prehooks(ctx.device) if hooked else None
        grads = joint.grads_for_backward()
        with no_grad():
            result = cls.backward(user_ctx, *grads)
        result = _checked_result(cls, ctx, user_ctx, result)
        if joint.posthooks:
            result = _checked_result(cls, ctx, user_ctx, joint.run_posthooks(result, ctx.inputs, grad_outputs))
        return tuple(None if r is None or not isinstance(x, Tensor) else _gradient_for(r, x, cls, i)
                     for i, (r, x) in enumerate(zip(result, ctx.inputs)))

    @staticmethod
    def backward_graph(ctx, token_grad):
        """create_graph=True: the user's backward runs with grad mode on, on gradients that are tensors
        in the graph, so what it computes with ops on its saved inputs is recorded (torch's double
        backward through a custom Function). A backward marked once_differentiable runs without, and
        its results refuse to be differentiated again (torch's error, when that happens)."""
        joint = ctx.joint
        cls, user_ctx = joint.cls, joint.user_ctx
        if joint.prehooks or joint.posthooks:
            raise NotImplementedError(f"hooks on {cls.__name__}Backward (grad_fn.register_prehook / register_hook) "
                                      "run in a plain backward only; with create_graph=True hook the output or "
                                      "input tensors (Tensor.register_hook) instead")
        if getattr(cls.backward, "once_differentiable", False):
            grads = joint.grads_for_backward()
            with no_grad():
                result = cls.backward(user_ctx, *grads)
            result = _checked_result(cls, ctx, user_ctx, result)
            # (torch's: the error node hangs on the incoming gradients that are in a graph; none, no node)
            sources = [g for g in grads if isinstance(g, Tensor) and g.requires_grad]
            if sources:
                result = tuple(r if not isinstance(r, Tensor) else higher_order.DelayedError.apply(
                    r, *sources, message="trying to differentiate twice a function that was marked with "
                                         "@once_differentiable") for r in result)
        else:
            saved = user_ctx._saved
            try:
                user_ctx._saved = tuple(_in_graph(t, joint, ctx) for t in saved)
                with enable_grad():
                    result = cls.backward(user_ctx, *joint.grads_for_backward())
            finally:
                user_ctx._saved = saved
                joint.output_nodes = [None] * len(joint.outputs)  # (no cycle left between joint and nodes)
            result = _checked_result(cls, ctx, user_ctx, result)
        return tuple(None if r is None or not isinstance(x, Tensor) else
                     higher_order.sum_to(_gradient_for(r, x, cls, i, shape_only=True), x.shape)
                     for i, (r, x) in enumerate(zip(result, ctx.inputs)))


def _in_graph(saved, joint, call):
    """A saved tensor as the user's backward reads it in a create_graph=True pass: an output of the
    call comes back computed by its own output node (as torch unpacks a saved output with its grad_fn),
    so that the gradient's dependence on it is recorded and differentiating again runs this Function's
    backward once more; anything else as saved. An output no gradient reached in this pass (the double-backward
    tutorial's Sinh saves ``exp(x)``, its second output, and its caller keeps the first only) gets a fresh output
    node on the call node ``call``, as the ones Function.apply made."""
    for index, (out, node) in enumerate(zip(joint.outputs, joint.output_nodes)):
        if saved is out:
            if node is None:
                token = Tensor._make(_token(call.device), call.device, True, call)
                with enable_grad():
                    node = _UserOutput.apply(token, joint=joint, index=index)._ctx
            recorded = Tensor._make(out._array, out._device, True, node)
            recorded._counter = out._version_counter()
            return recorded
    return saved


def _checked_result(cls, ctx, user_ctx, result):
    """The user's backward's result as a tuple of one entry per input, checked as torch checks it."""
    result = result if isinstance(result, tuple) else (result,)
    expected = len(user_ctx.needs_input_grad)
    if len(result) > expected:  # torch allows extra Nones only
        if any(r is not None for r in result[expected:]):
            raise RuntimeError(f"function {cls.__name__}Backward returned an incorrect number of "
                               f"gradients (expected {expected}, got {len(result)})")
        result = result[:expected]
    if len(result) < expected:
        raise RuntimeError(f"function {cls.__name__}Backward returned an incorrect number of "
                           f"gradients (expected {expected}, got {len(result)})")
    for position, (r, x) in enumerate(zip(result, ctx.inputs), 1):
        if r is not None and not isinstance(x, Tensor):  # torch refuses rather than drops it
            raise RuntimeError(f"function {cls.__name__}Backward returned a gradient different than "
                               f"None at position {position}, but the corresponding forward input "
                               f"was not a Variable")
    return result


def _gradient_for(r, x, cls, index, shape_only=False):
    """The array of a user backward's gradient ``r`` for input ``x``, checked as torch checks it: a
    Tensor of x's shape, or of a shape x broadcasts to (then summed down to x's shape). ``shape_only``:
    check it and hand back ``r`` itself (a recorded pass sums it down with ops)."""
    if not isinstance(r, Tensor):
        raise RuntimeError(f"expected Variable or None (got {type(r).__name__})")
    g, shape = r._array, x._array.shape
    if g.shape == shape or shape_only and np.broadcast_shapes(shape, g.shape) == g.shape:
        return r if shape_only else g
    try:
        expandable = np.broadcast_shapes(shape, g.shape) == g.shape
    except ValueError:
        expandable = False
    if not expandable:
        raise RuntimeError(f"Function {cls.__name__}Backward returned an invalid gradient at index {index} - "
                           f"got {list(g.shape)} but expected shape compatible with {list(shape)}")
    extra = g.ndim - len(shape)
    summed = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and g.shape[i + extra] != 1)
    return g.sum(axis=summed, keepdims=True).reshape(shape)


class _UserOutput(_tensor.Function):
    """The engine's node for one output of a user's Function: forward hands back the output the
    user's forward already computed; backward keeps its gradient for the call node (``_UserCall``)."""
    meta_gradients = False  # (on meta too, torch runs this backward: minilora/ops/meta.py)

    @staticmethod
    def forward(ctx, token, *, joint, index):
        ctx.joint, ctx.index = joint, index
        return joint.outputs[index]._array

    @staticmethod
    def backward(ctx, g):
        ctx.joint.received[ctx.index] = g
        return _token(ctx.device)

    @staticmethod
    def backward_graph(ctx, g):
        ctx.joint.received[ctx.index] = g  # (a tensor: handed to the user's backward as it is)
        ctx.joint.output_nodes[ctx.index] = ctx  # (for a saved output: see _in_graph)
        return Tensor._make(_token(ctx.device), ctx.device, False, None)


class Function:
    """torch.autograd.Function: subclass with static ``forward(ctx, *args)`` and
    ``backward(ctx, *grad_outputs)`` on Tensors, then call ``MyFunction.apply(*args)``.

    With several outputs, the user's backward runs once per backward pass, as torch's, with every
    output's gradient (zeros for an output that received none, or None after
    ``ctx.set_materialize_grads(False)``).
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("You must implement the forward function for custom autograd.Function.")

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError("setup_context is not implemented.")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("You must implement either the backward or vjp method for your "
                                  "custom autograd.Function to use it with backward mode AD.")

    @staticmethod
    def jvp(ctx, *grad_inputs):
        raise NotImplementedError("You must implement the jvp function for custom autograd.Function to use it with "
                                  "forward mode AD.")

    @classmethod
    def apply(cls, *args, **kwargs):
        dual = _tensor._forward_ad  # a forward-AD level is open: the Function's own jvp gives the tangents
        tangents = dual.tangents_of(args) if dual is not None else None
        if tangents is None:
            return cls._apply(args, kwargs)[0]
        with dual.plain():  # (forward sees the primals, as torch's)
            result = cls._apply(args, kwargs)
        dual.user_jvp(cls, result[1], tangents, result[0])
        return result[0]

    @classmethod
    def _apply(cls, args, kwargs):
        """(the outputs, recorded when an input requires grad; the ctx)"""
        grad_on = _tensor._mode.grad_enabled  # (recording: grad mode on, inference mode off)
        needs = tuple(grad_on and isinstance(a, Tensor) and a.requires_grad for a in args)
        ctx = FunctionCtx(needs)
        with no_grad():
            if cls.setup_context is Function.setup_context:  # the classic form: forward(ctx, ...)
                output = cls.forward(ctx, *args, **kwargs)
            else:  # the new form: forward(...) without ctx, then setup_context(ctx, inputs, output)
                output = cls.forward(*args, **kwargs)
                cls.setup_context(ctx, args, output)
        if not any(needs):
            if grad_on:  # (a view it returned is tagged all the same, as torch's: see returned_by_custom_function)
                for out in output if isinstance(output, tuple) else (output,):
                    if isinstance(out, Tensor):
                        _tensor.returned_by_custom_function(out, out)
            return output, ctx
        outputs = output if isinstance(output, tuple) else (output,)
        joint = _Joint(cls, ctx, outputs)
        token = _UserCall.apply(*args, joint=joint)
        recorded = [out if not isinstance(out, Tensor) or any(out is t for t in ctx.non_differentiable)
                    else _as_output(out, _UserOutput.apply(token, joint=joint, index=index), ctx)
                    for index, out in enumerate(outputs)]
        graph = tuple(a for a in args if isinstance(a, Tensor))  # (torch's node: one edge per tensor argument)
        numbers = []
        for index, out in enumerate(recorded):  # printed as torch prints them: tensor(..., grad_fn=<MyExpBackward>)
            if isinstance(out, Tensor):
                _tensor.name_node(out, f"{cls.__name__}Backward", graph=graph)
                if out._ctx is not None:  # (print(y.grad_fn): <torch.autograd.function.MyExpBackward object at ...>)
                    out._ctx.python_module = function.__name__
                    numbers.append(index)  # (torch numbers a Function's outputs by place, marked ones included)
        nodes = [out for out in recorded if isinstance(out, Tensor) and out._ctx is not None]
        _tensor.share_node(nodes, numbers)
        if nodes:  # (y.grad_fn is the call's node with its ctx, as torch's: y.grad_fn.saved_tensors; _CtxNode)
            nodes[0]._ctx.user_ctx = weakref.ref(ctx)
        return (tuple(recorded) if isinstance(output, tuple) else recorded[0]), ctx


def _as_output(out, recorded, ctx):
    """What the caller gets for output ``out`` of a user's forward, given its recorded node's tensor.

    A tensor marked dirty comes back as itself, now computed by this node (torch's mark_dirty).
    Otherwise the recorded tensor shares ``out``'s version counter: a saved output changed in place
    afterwards is then caught by ``saved_tensors``, as in torch, instead of giving a wrong gradient."""
    if any(out is t for t in ctx.dirty):
        if out._ctx is None and out.requires_grad:
            raise RuntimeError("a leaf Variable that requires grad has been used in an in-place operation.")
        out._ctx, out._requires_grad = recorded._ctx, True
        return out
    recorded._counter = out._version_counter()
    _tensor.returned_by_custom_function(recorded, out)
    return recorded


class GradcheckError(RuntimeError):
    """torch.autograd.gradcheck.GradcheckError: backward disagrees with finite differences."""


def gradcheck(func, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, nondet_tol=0.0,
              check_undefined_grad=True, check_grad_dtypes=False, check_batched_grad=False,
              check_batched_forward_grad=False, check_forward_ad=False, check_backward_ad=True, fast_mode=False,
              masked=None):
    """torch.autograd.gradcheck: True when ``func``'s backward matches central differences for every
    float64 input that requires grad (minilora.testing.grad_check does the checking, one output at a
    time), and with ``check_forward_ad=True`` its forward-mode Jacobian too (forward_ad.jacobian_mismatch).
    On a mismatch: GradcheckError, or False with ``raise_exception=False``. ``.grad`` is left as it was.
    ``fast_mode=True`` (torch: one random projection of the Jacobian) runs the full check, which any function
    passing it passes too; ``nondet_tol`` has nothing to allow for (minilora's backward is deterministic), nor
    ``masked`` (no sparse tensors). (torch's extra check that a backward takes undefined output gradients is
    not run.)"""
    for flag, value in (("check_batched_grad", check_batched_grad),
                        ("check_batched_forward_grad", check_batched_forward_grad)):
        if value:
            raise NotImplementedError(f"gradcheck({flag}=True): minilora has no batched gradients (its vmap "
                                      "runs the function once per sample)")
    inputs = _checked_as_leaves((inputs,) if isinstance(inputs, Tensor) else tuple(inputs))
    kept = [(t, t.grad) for t in inputs if isinstance(t, Tensor)]
    with no_grad():
        first = func(*inputs)
    count = len(first) if isinstance(first, tuple) else None
    if check_forward_ad:
        mismatch = forward_ad.jacobian_mismatch(func, inputs, eps, atol, rtol)
        if mismatch is not None:
            if raise_exception:
                raise GradcheckError(mismatch)
            return False
    k = 0
    try:
        for k in range(count or 1) if check_backward_ad else ():
            single = func if count is None else (lambda *a, k=k: func(*a)[k])
            testing.grad_check(single, *inputs, eps=eps, atol=atol, rtol=rtol,
                               name=getattr(func, "__name__", "func"))
    except testing.GradCheckError as error:
        if raise_exception:  # (torch's first line, counting the inputs that require grad; then where and how much)
            position = sum(isinstance(t, Tensor) and t.requires_grad for t in inputs[:error.input_index])
            raise GradcheckError(f"Jacobian mismatch for output {k} with respect to input {position},\n"
                                 f"{error}") from None
        return False
    finally:
        for t, g in kept:
            t.grad = g
    return True


def _checked_as_leaves(inputs):
    """gradcheck's inputs, each one that requires grad but has a history (the double-backward tutorial's
    ``torch.tensor(1., requires_grad=True, dtype=torch.double).clone()``) replaced by a leaf sharing its memory:
    torch checks d(output)/d(input) by autograd.grad, which stops at the input, while grad_check reads ``.grad``,
    which only a leaf gets. The perturbations still reach the caller's tensor (and are undone), as torch's."""
    return tuple(t.detach().requires_grad_() if isinstance(t, Tensor) and t.requires_grad and t.grad_fn is not None
                 else t for t in inputs)


def once_differentiable(backward):
    """torch.autograd.function.once_differentiable: a backward that is not itself differentiable. The
    plain pass runs every backward without recording anyway; a create_graph=True pass runs this one
    without too, and differentiating its results again is torch's error (see _UserCall.backward_graph)."""
    backward.once_differentiable = True
    return backward


# torch.autograd.function, for ``from torch.autograd.function import once_differentiable`` spelled
# with minilora: a module of the names it holds
function = types.ModuleType(__name__ + ".function", "torch.autograd.function's names on minilora")
function.Function, function.FunctionCtx, function.once_differentiable = Function, FunctionCtx, once_differentiable
sys.modules[function.__name__] = function


# torch.autograd.functional: Jacobians and vector products of a function, by reverse mode on the one engine
# (second derivatives -- hessian, hvp, vhp, jvp's double-vjp, create_graph=True -- by its recorded pass,
# minilora/ops/higher_order.py)
def _leaves(inputs, create_graph=False):
    """``inputs`` (a Tensor or a tuple of them) as tensors to differentiate with respect to, and whether it
    was a tuple: fresh leaves, or (create_graph=True, an input that requires grad) a view of the caller's
    tensor, so the results stay differentiable with respect to it (torch's _grad_preprocess)."""
    is_tuple = isinstance(inputs, (tuple, list))
    inputs = inputs if is_tuple else (inputs,)
    return tuple(x.view_as(x) if create_graph and x.requires_grad else x.detach().requires_grad_()
                 for x in inputs), is_tuple


def _outputs_of(func, leaves):
    with _tensor.enable_grad():
        out = func(*leaves)
    return _as_tuple(out), isinstance(out, tuple)


def _kept(outputs, create_graph):
    """The function's outputs as torch returns them: detached unless create_graph=True."""
    return outputs if create_graph else tuple(o.detach() for o in outputs)


def _grads_of(outputs, leaves, grad_outputs, create_graph):
    """torch's _autograd_grad: grad() over the outputs that require grad only; None for each leaf
    none of them depends on."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o is not None and o.requires_grad]
    if not pairs:
        return (None,) * len(leaves)
    return grad([o for o, _ in pairs], leaves, [g for _, g in pairs], retain_graph=True,
                create_graph=create_graph, allow_unused=True)


def _filled(grads, leaves, strict, what):
    """Zeros for the leaves with no gradient (in strict mode: torch's error)."""
    for i, g in enumerate(grads):
        if g is None and strict:
            raise RuntimeError(f"The {what} of the user-provided function is independent of input {i}. "
                               "This is not allowed in strict mode.")
    return [(_zeros_like(x) if g is None else g) for g, x in zip(grads, leaves)]


def _input_grads(output, leaves, grad_output, strict, k, create_graph=False):
    """d(output . grad_output)/d(each leaf): zeros for a leaf it does not depend on (an error in strict mode)."""
    found = _grads_of((output,), leaves, (grad_output,), create_graph)
    for i, g in enumerate(found):
        if g is None and strict:
            raise RuntimeError(f"Output {k} of the user-provided function is independent of input {i}. "
                               "This is not allowed in strict mode.")
    return [(_zeros_like(x) if g is None else g) for g, x in zip(found, leaves)]


def _shaped(nested, outer_tuple, inner_tuple):
    """torch's nesting: a tuple level only where the function's outputs / inputs were a tuple."""
    rows = [tuple(row) if inner_tuple else row[0] for row in nested]
    return tuple(rows) if outer_tuple else rows[0]


def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False, strategy="reverse-mode"):
    """torch.autograd.functional.jacobian: for each output and input, a Tensor of shape
    ``output.shape + input.shape`` (one backward pass per output element)."""
    _checked_strategy(strategy, vectorize, create_graph, hint=True)
    leaves, inputs_tuple = _leaves(inputs, create_graph)
    outputs, outputs_tuple = _outputs_of(func, leaves)
    return _shaped(_jacobians(outputs, leaves, strict, create_graph), outputs_tuple, inputs_tuple)


def _checked_strategy(strategy, vectorize, create_graph, hint):
    """torch's checks of ``strategy``. 'forward-mode' gives the same Jacobian as reverse mode (torch's pushes
    a tangent per input element, minilora pulls a cotangent per output element: one float64 result to
    rounding), so it is computed by reverse mode."""
    if strategy not in ("forward-mode", "reverse-mode"):
        raise AssertionError('Expected strategy to be either "forward-mode" or "reverse-mode".' + (
            ' Hint: If your function has more outputs than inputs, "forward-mode" tends to be more performant. '
            'Otherwise, prefer to use "reverse-mode".' if hint else ""))
    if strategy == "forward-mode" and not vectorize:
        raise NotImplementedError("Computing Jacobian using forward-AD or forward-over-reverse Hessian is"
                                  "only implemented for `vectorize=True`.")
    if strategy == "forward-mode" and create_graph:
        raise NotImplementedError('torch.autograd.functional.jacobian: `create_graph=True` and '
                                  '`strategy="forward-mode"` are not supported together (yet). Please either set '
                                  '`create_graph=False` or `strategy="reverse-mode"`.')


def _jacobians(outputs, leaves, strict, create_graph=False):
    """[output][input] -> the Jacobian block, of shape output.shape + input.shape (stacked with ops:
    with create_graph=True, in the graph)."""
    from .ops.shape import stack
    table = []
    for k, out in enumerate(outputs):
        xp = out._device.xp
        rows = [[] for _ in leaves]
        for index in range(out._array.size):
            onehot = xp.zeros(out._array.size, dtype=out._array.dtype)
            onehot[index] = 1
            seed = Tensor._make(onehot.reshape(out._array.shape), out._device, False, None)
            for i, g in enumerate(_input_grads(out, leaves, seed, strict, k, create_graph)):
                rows[i].append(g)
        table.append([stack(r).reshape(tuple(out.shape) + tuple(x.shape)) if r else
                      Tensor._make(xp.zeros(out._array.shape + x._array.shape, dtype=x._array.dtype),
                                   x._device, False, None) for r, x in zip(rows, leaves)])
    return table


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """torch.autograd.functional.vjp: ``(func(inputs), v^T J)``, the second shaped as the inputs."""
    leaves, inputs_tuple = _leaves(inputs, create_graph)
    outputs, outputs_tuple = _outputs_of(func, leaves)
    if v is None:
        if len(outputs) != 1 or outputs[0]._array.size != 1:
            raise RuntimeError("The vector v can only be None if the user-provided function returns a single "
                               "Tensor with a single element.")
        v = (None,)
    total = None
    for k, (out, seed) in enumerate(zip(outputs, _as_tuple(v))):
        grads = _input_grads(out, leaves, seed, strict, k, create_graph)
        total = grads if total is None else [a + b for a, b in zip(total, grads)]
    kept = _kept(outputs, create_graph)
    return (kept if outputs_tuple else kept[0]), (tuple(total) if inputs_tuple else total[0])


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """torch.autograd.functional.jvp: ``(func(inputs), J v)``, the second shaped as the outputs. As
    torch's, by the double-vjp trick (minilora has no forward mode): ``u -> J^T u`` is linear in ``u``,
    so its vjp with ``v`` is ``J v``. Without create_graph, a function whose backward cannot be
    differentiated gets ``J v`` from its Jacobian instead."""
    leaves, inputs_tuple = _leaves(inputs, create_graph)
    if v is None:
        if len(leaves) != 1 or leaves[0]._array.size != 1:
            raise RuntimeError("The vector v can only be None if the input to the user-provided function is a "
                               "single Tensor with a single element.")
        v = (Tensor._make(leaves[0]._device.xp.ones_like(leaves[0]._array), leaves[0]._device, False, None),)
    v = _as_tuple(v)
    outputs, outputs_tuple = _outputs_of(func, leaves)  # (func runs once)
    products = _jvp_products(outputs, leaves, v, create_graph, strict)
    kept = _kept(outputs, create_graph)
    return (kept if outputs_tuple else kept[0]), (tuple(products) if outputs_tuple else products[0])


def _jvp_products(outputs, leaves, v, create_graph, strict):
    """J v for each output (torch.autograd.functional.jvp's and torch.func.jvp's values): by the double-vjp
    trick, or, without create_graph, from the Jacobian where a backward cannot be differentiated."""
    try:
        return _jvp_by_double_vjp(outputs, leaves, v, create_graph, strict)
    except higher_order.NotDifferentiableBackward:
        if create_graph:
            raise
        return _jvp_by_jacobian(outputs, leaves, v, strict)


def _jvp_by_double_vjp(outputs, leaves, v, create_graph, strict, dummy=None):
    """J v as the vjp of ``u -> J^T u`` (linear in u) with v, at ``u = dummy(output)`` (zeros, as torch's)."""
    dummies = tuple((dummy or _zeros_like)(o).requires_grad_() for o in outputs)
    grads = _grads_of(outputs, leaves, dummies, create_graph=True)
    grads = _filled(grads, leaves, strict, "output")  # (strict: some output independent of some input)
    products = _grads_of(grads, dummies, v, create_graph)
    return _filled(products, outputs, False, "jvp")


def _jvp_by_jacobian(outputs, leaves, v, strict):
    products = []
    for out, row in zip(outputs, _jacobians(outputs, leaves, strict)):
        acc = None
        for J, vec in zip(row, v):
            flat = J._array.reshape(out._array.size, -1) @ vec._array.reshape(-1).astype(J._array.dtype, copy=False)
            acc = flat if acc is None else acc + flat
        products.append(Tensor._make(acc.reshape(out._array.shape), out._device, False, None))
    return products


def _single_output(func, leaves, name):
    """func's output, which must be one Tensor of one element (torch's words where it is not)."""
    outputs, outputs_tuple = _outputs_of(func, leaves)
    if outputs_tuple or len(outputs) != 1:
        raise RuntimeError(f"The function given to {name} should return a single Tensor")
    if outputs[0]._array.size != 1:
        raise RuntimeError(f"The Tensor returned by the function given to {name} should contain a single element")
    return outputs[0]


def hessian(func, inputs, create_graph=False, strict=False, vectorize=False, outer_jacobian_strategy="reverse-mode"):
    """torch.autograd.functional.hessian: the Jacobian of the gradient (``H[i][j]`` of shape
    ``inputs[i].shape + inputs[j].shape`` for a tuple of inputs), as torch computes it."""
    _checked_strategy(outer_jacobian_strategy, vectorize, create_graph, hint=False)
    leaves, inputs_tuple = _leaves(inputs, create_graph)

    def gradient(*xs):
        inner, _ = _leaves(xs, True)
        out = _single_output(func, inner, "hessian").reshape(())
        return tuple(_input_grads(out, inner, None, strict, 0, create_graph=True))

    outputs, _ = _outputs_of(gradient, leaves)
    return _shaped(_jacobians(outputs, leaves, strict, create_graph), inputs_tuple, inputs_tuple)


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """torch.autograd.functional.vhp: ``(func(inputs), v^T H)``, shaped as the inputs."""
    return _hessian_product(func, inputs, v, create_graph, strict, "vhp")


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """torch.autograd.functional.hvp: ``(func(inputs), H v)``. The Hessian of a twice differentiable
    function is symmetric, so ``H v = (v^T H)^T``: one double backward (torch runs a third pass to
    transpose; the values agree to rounding)."""
    return _hessian_product(func, inputs, v, create_graph, strict, "hvp")


def _hessian_product(func, inputs, v, create_graph, strict, name):
    leaves, inputs_tuple = _leaves(inputs, create_graph)
    if v is None:
        if len(leaves) != 1 or leaves[0]._array.size != 1:
            raise RuntimeError("The vector v can only be None if the input to the user-provided function is a "
                               "single Tensor with a single element.")
        v = (Tensor._make(leaves[0]._device.xp.ones_like(leaves[0]._array), leaves[0]._device, False, None),)
    v = _as_tuple(v)
    if len(v) != len(leaves) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(v, leaves)):
        raise RuntimeError(f"{name}: v must have one tensor per input, each of the input's shape")
    out = _single_output(func, leaves, name)
    first = _filled(_grads_of((out,), leaves, (None,), create_graph=True), leaves, strict, "output")
    second = _filled(_grads_of(first, leaves, v, create_graph), leaves, strict, "jacobian")
    kept = _kept((out,), create_graph)[0]
    return kept, (tuple(second) if inputs_tuple else second[0])


class set_detect_anomaly(_tensor._GradMode):
    """torch's: ``set_detect_anomaly(True)`` makes backward raise at the first node whose backward returns
    NaN, naming it (``Function 'SqrtBackward0' returned nan values in its 0th output.``), at once when
    called, or for a ``with`` block / decorated function. (minilora keeps no forward tracebacks.)"""

    def __init__(self, mode, check_nan=True):
        self.prev, self.mode = _tensor._detect_anomaly, bool(mode) and bool(check_nan)
        _tensor._detect_anomaly = self.mode

    def __enter__(self):
        _tensor._detect_anomaly = self.mode

    def __exit__(self, *exc):
        _tensor._detect_anomaly = self.prev
        return False

    def __call__(self, fn):
        _tensor._detect_anomaly = self.prev  # as decorator, the call above changes nothing now
        mode = self.mode
        return _tensor._decorate(fn, lambda: set_detect_anomaly(mode))


class detect_anomaly(set_detect_anomaly):
    """``with detect_anomaly():`` (or as a decorator): ``set_detect_anomaly(True)`` for the block."""

    def __init__(self, check_nan=True):
        self.prev, self.mode = _tensor._detect_anomaly, bool(check_nan)


def is_anomaly_enabled():
    return _tensor._detect_anomaly


class saved_tensors_hooks:
    """torch.autograd.graph.saved_tensors_hooks(pack_hook, unpack_hook): inside the block, every tensor
    an op saves for backward goes through ``pack_hook(tensor)`` once, when the op runs, and the node keeps
    what it returns; backward (and ``grad_fn._saved_self``) calls ``unpack_hook(packed)``, which must give
    the tensor back. The innermost block's hooks apply; they are per thread, as torch's. (tensor.py's
    ``_pack_saved`` does the packing, where Function.apply records the node.)"""

    def __init__(self, pack_hook, unpack_hook):
        self.pack_hook, self.unpack_hook = pack_hook, unpack_hook

    def __enter__(self):
        mode = _tensor._mode
        if mode.hooks_refused is not None:
            raise RuntimeError(mode.hooks_refused)
        _tensor._saved_hooks_used = True
        mode.saved_hooks = mode.saved_hooks + ((self.pack_hook, self.unpack_hook),)

    def __exit__(self, *exc):
        _tensor._mode.saved_hooks = _tensor._mode.saved_hooks[:-1]
        return False


class save_on_cpu(saved_tensors_hooks):
    """torch.autograd.graph.save_on_cpu(pin_memory=False, device_type="cuda"): the tensors saved in the
    block wait for backward in host memory, and go back to their device when backward needs them."""

    def __init__(self, pin_memory=False, device_type="cuda"):
        def pack_to_cpu(tensor):
            return tensor.device, tensor.cpu()

        def unpack_from_device(packed):
            device, tensor = packed
            return tensor.to(device)
        super().__init__(pack_to_cpu, unpack_from_device)


class disable_saved_tensors_hooks:
    """torch.autograd.graph.disable_saved_tensors_hooks(error_message): inside, entering
    ``saved_tensors_hooks`` raises RuntimeError(error_message); entering it while hooks are on does too."""

    def __init__(self, error_message):
        self.error_message = error_message

    def __enter__(self):
        mode = _tensor._mode
        if mode.saved_hooks:
            raise RuntimeError(self.error_message)
        self.prev, mode.hooks_refused = mode.hooks_refused, self.error_message

    def __exit__(self, *exc):
        _tensor._mode.hooks_refused = self.prev
        return False

    def __call__(self, fn):
        message = self.error_message
        return _tensor._decorate(fn, lambda: disable_saved_tensors_hooks(message))


# torch.autograd.graph: ``from minilora.autograd.graph import save_on_cpu`` works as torch's
graph = types.ModuleType(__name__ + ".graph", "torch.autograd.graph's hooks on saved tensors, on minilora")
graph.saved_tensors_hooks, graph.save_on_cpu = saved_tensors_hooks, save_on_cpu
graph.disable_saved_tensors_hooks = disable_saved_tensors_hooks
sys.modules[graph.__name__] = graph


class Node(abc.ABC):  # noqa: B024  (torch's: an ABC that the engine's node classes are registered with)
    """``torch.autograd.graph.Node``: what every ``grad_fn`` and entry of ``next_functions`` is an instance
    of (``isinstance(y.grad_fn, torch.autograd.graph.Node)``), a node of the recorded graph or a leaf's
    AccumulateGrad."""


for _node_class in (_tensor.Context, _tensor.AccumulateGrad, _tensor._ShownNode, _tensor._CtxNode):
    Node.register(_node_class)
graph.Node = Node


def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  gen_non_contig_grad_outputs=False, raise_exception=True, nondet_tol=0.0, check_undefined_grad=True,
                  check_grad_dtypes=False, check_batched_grad=False, check_fwd_over_rev=False,
                  check_rev_over_rev=True, fast_mode=False, masked=False):
    """torch.autograd.gradgradcheck: gradcheck of ``(inputs, grad_outputs) -> d(func . grad_outputs)/d(inputs)``
    (recorded with create_graph=True), so the second derivatives are checked against central differences:
    by reverse mode (``check_rev_over_rev``), and by forward mode over it with ``check_fwd_over_rev=True``.
    ``grad_outputs`` default: random float64 tensors of the outputs' shapes (a fixed seed)."""
    if not (check_fwd_over_rev or check_rev_over_rev):  # (torch's assertions, in its words)
        raise AssertionError("Expected at least one of check_fwd_over_rev or check_rev_over_rev to be True")
    if check_undefined_grad and not check_rev_over_rev:
        raise AssertionError("Setting check_undefined_grad=True requires check_rev_over_rev to be True")
    inputs = _checked_as_leaves((inputs,) if isinstance(inputs, Tensor) else tuple(inputs))
    if grad_outputs is None:
        with no_grad():
            outputs = _as_tuple(func(*inputs))
        rng = np.random.default_rng(0)
        grad_outputs = tuple(Tensor._make(o._device.xp.asarray(rng.standard_normal(o.shape).astype(o._array.dtype)),
                                          o._device, True, None) for o in outputs)
    grad_outputs = _as_tuple(grad_outputs)
    count = len(inputs)

    def first_derivatives(*args):
        xs, seeds = args[:count], args[count:]
        wrt = [x for x in xs if isinstance(x, Tensor) and x.requires_grad]
        with enable_grad():
            grads = grad(_as_tuple(func(*xs)), wrt, seeds, create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return gradcheck(first_derivatives, inputs + grad_outputs, eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception, check_batched_grad=check_batched_grad,
                     check_forward_ad=check_fwd_over_rev, check_backward_ad=check_rev_over_rev, fast_mode=fast_mode)


functional = types.ModuleType(__name__ + ".functional", "torch.autograd.functional's names on minilora")
functional.jacobian, functional.vjp, functional.jvp = jacobian, vjp, jvp
functional.hessian, functional.hvp, functional.vhp = hessian, hvp, vhp
sys.modules[functional.__name__] = functional


# torch.autograd.forward_ad: dual tensors (minilora/forward_ad.py, which builds on this module)
from . import forward_ad  # noqa: E402
sys.modules[__name__ + ".forward_ad"] = forward_ad
