"""Tensor and reverse-mode autograd -- the whole engine in one file.

A ``Tensor`` wraps a raw NumPy (or CuPy) array, where it lives (``device``) and, when it was computed
by an op that needs gradients, the ``Context`` of that op (``_ctx``). A Context remembers which op
ran (``fn``), its input tensors and their nodes, what forward saved for backward, and which inputs
need a gradient.

**The raw array is ``t._array``.** Ops, optimizers and kernels read and write this slot directly: it
is the engine's own handle on the numbers, so the hot paths pay for no wrapper. Users see what torch
shows them: ``t.data`` is a *Tensor* -- detached, sharing ``_array`` with ``t`` (writing into it changes
``t``, outside autograd) -- and ``t.grad`` is a Tensor or ``None``. ``t.numpy()`` and ``np.asarray(t)``
give the array itself.

``loss.backward()`` walks the graph of Contexts in reverse creation order, calls each op's
``backward(ctx, grad)`` on raw arrays, and adds the returned gradients into the inputs' nodes. Leaf
tensors (created by the user, ``requires_grad=True``) accumulate them in ``.grad``.

Views and in-place ops follow torch. An op whose result is a view of an input's array (reshape,
basic indexing, transpose, expand, ``detach``) gives a tensor that shares that input's storage and
its **version counter** (``_counter``, one list ``[n]`` shared by a tensor and its views; torch's
``t._version`` reads it). Every in-place op (``x += 1``, ``x.mul_(2)``, ``x[0] = 1``, ...) bumps it.
If an op saved a storage for backward and that storage was modified in place before backward,
backward raises torch's error instead of computing with the changed numbers. An in-place op on a
non-leaf tensor inside the graph is differentiable: the tensor's node becomes the in-place op's node
(torch's "rebase"), and ops recorded earlier keep the node they saw, so the graph is not rewritten
under them. A view also remembers how it was made (torch's CreationMeta, see ``_DEFAULT``): one made
under ``no_grad()`` of a tensor that requires grad requires grad too (through its base), but has no
node and gets no gradient, and changing it in place in grad mode is torch's error.

Most tensors are never viewed or changed in place, and one op runs for every ``+``, so that
bookkeeping is paid only where it is used: a tensor gets its counter the first time it is viewed or
changed (``_counter`` is ``None`` until then: version 0); a node notes its inputs' versions only when
one is not 0; and backward skips the checks for every node recorded after the last in-place change
anywhere (``_last_change``), which is all of them in an ordinary forward pass.

Ops themselves live in ``minilora/ops``: each is a ``Function`` subclass with
``forward(ctx, *arrays)`` and ``backward(ctx, grad)``. ``Function.apply`` is the one door every op
goes through: it unwraps tensors, checks devices, runs forward, records the node in the graph only if
an input needs a gradient, and wraps the result.
"""
import functools
import inspect
import itertools
import math
import numbers
import operator
import os
import re
import sys
import threading
import time
import warnings
import weakref

import numpy as np

from . import dtypes, parallel, profiler
from .interrupts import held_ctrl_c
from ._tensor_str import tensor_repr
from .device import META as _META, NO_DATA as _NO_DATA, Device, all_devices as _all_devices, device as _get_device, \
    device_errors_as_torch, raise_device_error_as_torch, xp_of as _xp_of
from .size import Size, _from_tuple as _size  # x.shape: torch.Size's tuple with numel()
from .dtypes import to_dtype as _to_dtype  # noqa: F401  (nn imports it from here)

__all__ = ["Tensor", "Function", "Context", "ShapeError", "Size", "tensor", "no_grad", "enable_grad", "set_grad_enabled",
           "is_grad_enabled", "inference_mode", "is_inference_mode_enabled"]

# torch computes log(0) = -inf, 0/0 = nan and exp(1000) = inf silently; NumPy prints a RuntimeWarning
# for each. Wrapping every op in np.errstate would cost ~0.8 us per op, and np.seterr would silence the
# user's own NumPy code behind their back. A warnings filter costs nothing until a warning is raised and
# is scoped: it drops only NumPy's floating-point messages, only when raised from minilora's own modules
# (the frame that called the ufunc), so np.log(0) in user code still warns. (A filter the user adds
# later, e.g. warnings.simplefilter("error"), is checked first and still applies.)
warnings.filterwarnings("ignore", r"(divide by zero|invalid value|overflow|underflow) encountered",
                        RuntimeWarning, r"minilora\.")


class ShapeError(RuntimeError, ValueError):
    """Shapes that do not fit an op (broadcasting, matmul, reshape, cat, expand, permute). torch raises
    RuntimeError for these; minilora once raised ValueError: this is both, so either ``except`` works."""


# ----------------------------------------------------------------------------------------------
# Grad mode
# ----------------------------------------------------------------------------------------------
class _ThreadMode(threading.local):
    """torch's autograd state is per thread: a ``with no_grad():`` in one thread (a server's request,
    a DataLoader worker) leaves every other thread recording. Each thread starts with grad on, outside
    inference mode, with no hooks on saved tensors (torch's). ``Function.apply`` reads
    ``_mode.grad_enabled`` once per op: one attribute of a threading.local (~25 ns of a ~5 us op).

    Two switches, as torch's: grad mode (``no_grad``, ``enable_grad``, ``set_grad_enabled``) and inference
    mode; ops record a graph only with grad mode on and inference mode off (``grad_enabled``, kept by
    ``_set_modes``): ``enable_grad()`` inside ``inference_mode()`` turns grad mode on and records nothing."""

    def __init__(self):
        self.grad_mode = True
        self.inference = False
        self.grad_enabled = True  # grad_mode and not inference: what every op reads
        self.saved_hooks = ()  # (pack, unpack) pairs of saved_tensors_hooks, innermost last (autograd.py)
        self.hooks_refused = None  # disable_saved_tensors_hooks' message while it is in force
        self.inputs_chosen = False  # a backward pass over chosen inputs is running (see backward_over_inputs)


_mode = _ThreadMode()


class backward_over_inputs:
    """``with backward_over_inputs(chosen):`` around a backward pass: ``chosen`` where the pass computes the
    gradients of chosen inputs only (``autograd.grad``, ``backward(inputs=...)``). torch's reentrant
    checkpoint refuses to run inside such a pass (``torch.autograd._is_checkpoint_valid()``); a pass nested
    in another (a checkpoint's own backward) says again what it is, and the outer one's state comes back."""

    def __init__(self, chosen):
        self.chosen = chosen

    def __enter__(self):
        self.before, _mode.inputs_chosen = _mode.inputs_chosen, self.chosen

    def __exit__(self, *exc):
        _mode.inputs_chosen = self.before


def is_grad_enabled():
    """torch's grad mode, as set (True under ``enable_grad()`` inside ``inference_mode()``, which records nothing)."""
    return _mode.grad_mode


def _set_modes(grad_mode, inference):
    _mode.grad_mode, _mode.inference = grad_mode, inference
    _mode.grad_enabled = grad_mode and not inference


class _GradMode:
    """A context manager and decorator that turns graph building on or off (``no_grad`` and friends)."""

    def __init__(self, mode):
        self.mode = bool(mode)

    def __enter__(self):
        self.prev = _mode.grad_mode
        _set_modes(self.mode, _mode.inference)

    def __exit__(self, *exc):
        _set_modes(self.prev, _mode.inference)
        return False

    def __call__(self, fn):
        mode = self.mode
        return _decorate(fn, lambda: _GradMode(mode))  # a fresh one per call: safe when nested or recursive


class set_grad_enabled(_GradMode):
    """As torch: ``set_grad_enabled(False)`` turns graph building off at once (called as a function);
    ``with set_grad_enabled(False):`` and ``@set_grad_enabled(False)`` restore the mode afterwards."""

    def __init__(self, mode):
        super().__init__(dtypes.bool_argument("set_grad_enabled", "enabled", mode, position=1))
        self.prev = _mode.grad_mode
        _set_modes(self.mode, _mode.inference)

    def __enter__(self):
        _set_modes(self.mode, _mode.inference)  # self.prev: the mode before the call set it

    def __call__(self, fn):
        _set_modes(self.prev, _mode.inference)  # as decorator, the call above changes nothing now
        return super().__call__(fn)


def _decorate(fn, make_context):
    """``fn`` run inside a fresh ``make_context()``; for a generator function, each step of the
    generator runs inside one, and the caller's code between steps outside (as torch's decorators)."""
    if not inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with make_context():
                return fn(*args, **kwargs)
        return wrapper

    @functools.wraps(fn)
    def generator(*args, **kwargs):
        with make_context():
            gen = fn(*args, **kwargs)
        step, value = gen.send, None
        while True:
            with make_context():
                try:
                    response = step(value)
                except StopIteration as end:
                    return end.value
            try:
                value, step = (yield response), gen.send
            except GeneratorExit:
                with make_context():
                    gen.close()
                raise
            except BaseException as error:  # thrown in by the caller: pass it into the generator
                value, step = error, gen.throw
    return generator


class _GradModeDecorator(_GradMode):
    """``no_grad`` and friends work as ``with no_grad():``, ``@no_grad()`` and bare ``@no_grad``,
    as in torch: called with a function instead of no argument, the class decorates it."""

    def __new__(cls, fn=None):
        self = super().__new__(cls)
        if fn is None:
            return self
        if not callable(fn):
            raise TypeError(f"{cls.__name__}() takes no arguments (got {fn!r})")
        self.__init__()
        return self(fn)


class no_grad(_GradModeDecorator):
    """``with no_grad():`` -- ops record no graph (inference, optimizer updates)."""

    def __init__(self, fn=None):
        super().__init__(False)


class enable_grad(_GradModeDecorator):
    def __init__(self, fn=None):
        super().__init__(True)


# torch's words (c10's checks), word for word: a learner searching for the message finds torch's answers
_INFERENCE_REQUIRES_GRAD = "Setting requires_grad=True on inference tensor outside InferenceMode is not allowed."
_INFERENCE_IN_PLACE = ("Inplace update to inference tensor outside InferenceMode is not allowed.You can make a "
                       "clone to get a normal tensor before doing inplace update.See "
                       "https://github.com/pytorch/rfcs/pull/17 for more details.")
_inference_tensors_made = False  # has inference_mode() been entered in any thread? (then ops check
# what they save, and new tensors read the thread's mode: see Tensor._make)


def is_inference_mode_enabled():
    return _mode.inference


class inference_mode(_GradMode):
    """``with inference_mode():`` as torch: no graph, and the tensors made inside are inference tensors
    (``is_inference()``; outside, they refuse ``requires_grad_()``, in-place changes and being saved for
    backward, as torch's). Like torch's, ``inference_mode(mode)`` sets grad mode to ``not mode``:
    ``inference_mode(False)`` turns grad mode on, also inside ``no_grad()``."""

    def __new__(cls, mode=True):
        self = super().__new__(cls)
        if callable(mode):  # bare @inference_mode
            self.__init__()
            return self(mode)
        return self

    def __init__(self, mode=True):
        self.inference = bool(mode)
        super().__init__(not self.inference)

    def __enter__(self):
        global _inference_tensors_made
        self.prev_modes = (_mode.grad_mode, _mode.inference)
        _inference_tensors_made = _inference_tensors_made or self.inference
        _set_modes(self.mode, self.inference)

    def __exit__(self, *exc):
        _set_modes(*self.prev_modes)
        return False

    def __call__(self, fn):
        inference = self.inference
        return _decorate(fn, lambda: inference_mode(inference))


# ----------------------------------------------------------------------------------------------
# Function and Context: one node of the graph
# ----------------------------------------------------------------------------------------------
class Context:
    """What an op keeps between forward and backward. Ops set any attribute they need.

    The engine's own fields are slots; whatever an op saves (``ctx.a = a``) lands in the instance
    ``__dict__``, so ``free()`` can drop all of it with one ``clear()``. The engine's rarely-set
    fields (``versions``, ``out_watch``) are class-level defaults, stored on a node only when they
    differ: a graph holds one node per op, and every field set costs every op.
    """

    __slots__ = ("fn", "device", "needs_input_grad", "inputs", "parents", "seq", "freed", "retained",
                 "__dict__")
    versions = None  # each input's version when the op ran, if any was not 0 (None: all were 0)
    hooks = None  # {handle id: hook} registered on the output with Tensor.register_hook
    out_watch = None  # (version counter, version, storage id) of the output, once it has a counter
    node_name = None  # torch's name for the node where the call decides it, not the op (see name_node)
    torch_saved = None  # what torch's op saves, where the call decides it, not the op's arrays (see saves_as_torch)
    node_prehooks = node_hooks = None  # {handle id: hook} from grad_fn.register_prehook / register_hook
    packed = None  # [_Packed, ...]: what saved-tensor hooks packed in place of saved arrays (see _pack_saved)

    def __init__(self, fn, device, needs_input_grad):
        self.fn = fn
        self.device = device
        self.needs_input_grad = needs_input_grad  # tuple of bools, one per positional input
        self.inputs = ()  # the inputs (Tensors and numbers), set only when the node is recorded
        self.parents = ()  # each input's node when this op ran (None: a leaf or not a tensor)
        self.seq = 0  # creation number of a recorded node: the backward engine's ordering
        self.freed = False  # True once backward has used the node and dropped what it saved
        self.retained = None  # weak reference to the output after retain_grad() (_no_tensor: hooks only)

    def watch_output(self, tensor):
        """Remember ``tensor`` -- this node's output -- as it is now, for the in-place checks at backward."""
        counter = tensor._version_counter()
        self.out_watch = (counter, counter[0], id(_storage(tensor._array)))

    def save_for_backward(self, *arrays):
        self.saved = arrays

    # torch's view of a node (``print(loss.grad_fn)``, ``grad_fn.next_functions`` in its tutorials).
    # Ops save their own fields on the node, so none may be called ``name`` or ``next_functions``.
    def name(self):
        """The node's name as torch prints it (``AddBackward0``): the name the call gave it (``x.t()`` is
        minilora's Permute, torch's TBackward0), else the op's, in torch's words where they differ."""
        if self.node_name is not None:
            return self.node_name
        fn = self.fn
        if fn.torch_node_name is not None:
            return fn.torch_node_name(self)
        op = fn.__name__
        return f"{_TORCH_OP_NAMES.get(op, op)}Backward0"

    def __repr__(self):  # (torch prints a C++ node by its Python class: CopySlices, not torch::autograd::CopySlices;
        # a user Function's by its module's too: torch.autograd.function.MyExpBackward)
        module = self.__dict__.get("python_module")
        return f"<{module + '.' if module else ''}{self.name().rpartition('::')[2]} object at {id(self):#x}>"

    @property
    def next_functions(self):
        """One ``(node, 0)`` per floating-point tensor input, as torch's (numbers, integer indices and
        targets, bool masks have no entry): the node that made it, an ``AccumulateGrad`` for a leaf that
        requires grad, ``None`` for one that does not. Where minilora makes of several ops what torch makes
        of one (mse_loss, a convolution with bias), the last one's node shows torch's inputs (its
        ``torch_graph``, see name_node). Kept when backward frees the node, as torch's."""
        saved = self.__dict__
        graph = saved.get("torch_graph")
        if graph is not None:
            return _edges_of(graph)
        if "edges" in saved:  # a freed node that had a torch_graph
            return self.edges
        if "frozen_graph" in saved:  # freed, not asked yet: its graph's nodes are made now, once
            self.edges = edges = _edges_of(saved.pop("frozen_graph"))
            return edges
        numbers = self.fn.__name__ in _WRAPPED_NUMBERS
        inputs = self.inputs or (None,) * len(self.parents)  # (a freed node whose inputs all had nodes)
        return tuple(_edge(_input_node(x, parent)) for x, parent in zip(inputs, self.parents)
                     if parent is not None or _has_edge(x, numbers))

    # torch's saved tensors on a node, as its "Hooks for saved tensors" tutorial reads them
    # (``(a * b).grad_fn._saved_self is a``): what torch's node saves, by torch's names for the op's
    # arguments (``Function.torch_inputs``: ``_saved_mat2`` for mm's second). It is the ``__getattr__`` of the
    # classes a node gets when it is shown (_torch_typed), not of Context: a class with a __getattr__ loses
    # CPython's fast attribute access on every ctx field an op reads or writes (+6% on a tiny op chain).
    def _saved_by_torch_name(self, attribute):
        if "meta_call" in self.__dict__:  # (a meta op's forward saved its stand-ins': the op's own, first)
            _meta_ops.restore_saved(self)
        if attribute.startswith("_raw_saved_"):
            return self._raw_saved(attribute)
        if not attribute.startswith("_saved_"):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{attribute}'")
        name, names = attribute[len("_saved_"):], self._torch_argument_names()
        if self.name() in _SAVED_FOR_THE_OTHER and name in names[:2]:
            return self._saved_for_the_other(names.index(name), attribute)
        if name in names:
            return self._argument_as_saved(names.index(name), attribute)
        if name == _RESULT_AS.get(self.name(), "result"):
            return self._output_as_saved()
        value = _SAVED_VALUES.get(name)
        if value is not None:  # (kept after backward, as torch's: free() keeps what they read)
            answer = value(self)
            if answer is not _UNKNOWN:
                return answer
        raise self._not_shown(attribute)

    def _raw_saved(self, attribute):
        """``grad_fn._raw_saved_<name>``: torch's SavedTensor for a tensor this node shows as ``_saved_<name>``."""
        name, names = attribute[len("_raw_saved_"):], self._torch_argument_names()
        if self.freed and (name in names or name == _RESULT_AS.get(self.name(), "result")):
            return _RawSaved(self, None, None)  # (torch's is there: registering hooks on it is the error)
        if name in names:
            i = names.index(name)
            x = self.inputs[i] if i < len(self.inputs) else None
            if isinstance(x, Tensor):
                return _RawSaved(self, x, lambda: x)
        if name == _RESULT_AS.get(self.name(), "result") and self._output_array() is not None:
            return _RawSaved(self, _RESULT, self._output_as_saved)
        raise self._not_shown(attribute)

    def _output_array(self):
        """The array this node keeps of its own output, or None."""
        entry = next((e for e in self.torch_saved or () if e[0] is _RESULT), None)
        return entry[1] if entry is not None else None if self.torch_saved is not None else self.__dict__.get("out")

    def _saved_for_the_other(self, i, attribute):
        """torch's mul saves each operand for the other's gradient only (derivatives.yaml: ``self: grad * other``):
        None where the other needs none, and a number operand as the 0-d tensor torch wrapped it in."""
        if not self.needs_input_grad[1 - i]:  # (torch's None: no tensor saved, so none freed at backward)
            return None
        self._refuse_freed()
        x = self.inputs[i] if i < len(self.inputs) else None
        if isinstance(x, (bool, int, float, complex)):  # (torch's wrapped number: int64, float64, complex128)
            return Tensor._make(self.device.xp.asarray(x), self.device, False, None)
        return self._argument_as_saved(i, attribute)

    def _torch_self(self):
        """The tensor torch's node calls ``self`` (its first argument), or None where minilora does not know it."""
        names = self._torch_argument_names()
        if "self" in names:
            i = names.index("self")
            x = self.inputs[i] if i < len(self.inputs) else None
        else:
            graph = self.__dict__.get("torch_graph")
            x = graph[0] if graph and names == () else None
        return x if isinstance(x, Tensor) else None

    def _not_shown(self, attribute):
        """The AttributeError for a saved value this node does not show (torch's node may have it)."""
        names = ", ".join("_saved_" + n for n in self._torch_argument_names() if n) or "none of its inputs"
        return AttributeError(f"'{self.name()}' object has no attribute '{attribute}': of what torch's node "
                              f"saves, minilora's shows the tensors it keeps under torch's names ({names}, "
                              f"_saved_result where it keeps the output), not sizes, dims or scalars")

    def _torch_argument_names(self):
        """torch's names for this node's inputs, as its saved tensors are called (see _SAVED_AS)."""
        names = _SAVED_AS.get(self.name())
        if names is not None:
            return names
        # a node shown with other inputs than its own (name_node's graph: the last of several ops) has inputs
        # that are not torch's arguments: it shows none of them
        saved = self.__dict__
        shown_otherwise = "torch_graph" in saved or "edges" in saved or "frozen_graph" in saved
        return () if shown_otherwise else self.fn.torch_inputs

    def _output_as_saved(self):
        """A tensor equal to the output, with its node (torch's: not the output itself, which the node
        does not hold -- a reference cycle)."""
        self._refuse_freed()
        if self.packed is not None and any(p.source is _RESULT for p in self.packed):
            return next(p for p in self.packed if p.source is _RESULT).unpacked()
        array = self._output_array()
        if array is None:
            raise self._not_shown("_saved_result")
        return Tensor._make(array, self.device, True, self)

    def _argument_as_saved(self, i, attribute):
        self._refuse_freed()
        x = self.inputs[i] if i < len(self.inputs) else None
        if isinstance(x, Tensor):
            if self.packed is not None:  # torch's: each access calls the unpack hook
                packed = next((p for p in self.packed if p.source is x), None)
                if packed is not None:
                    return packed.unpacked()
            if self.torch_saved is not None:
                if any(e[0] is x for e in self.torch_saved):
                    return x
            elif id(_storage(x._array)) in {id(_storage(a)) for a in _saved_arrays(self.__dict__.values())}:
                return x
        raise self._not_shown(attribute)

    def _refuse_freed(self):
        if self.freed:
            raise RuntimeError("Trying to backward through the graph a second time (or directly access saved "
                               "tensors after they have already been freed). Saved intermediate values of the "
                               "graph are freed when you call .backward() or autograd.grad(). Specify "
                               "retain_graph=True if you need to backward through the graph a second time or "
                               "if you need to access saved tensors after calling backward.")

    # torch's hooks on a node (``y.grad_fn.register_hook``): they run at backward, where the engine
    # looks only at nodes whose ``retained`` is set (see Tensor.register_hook).
    def register_prehook(self, hook):
        """``hook(grad_outputs)`` runs before this node's backward; returning a tuple replaces
        ``grad_outputs``. Returns a handle; ``handle.remove()`` takes the hook out."""
        return self._add_node_hook("node_prehooks", hook)

    def register_hook(self, hook):
        """``hook(grad_inputs, grad_outputs)`` runs after this node's backward, one ``grad_inputs``
        entry per ``next_functions`` entry (None where no gradient flows); returning a tuple replaces them."""
        return self._add_node_hook("node_hooks", hook)

    def _add_node_hook(self, kind, hook):
        if self.__dict__.get("outputs_shown", 1) > 1:
            raise NotImplementedError(
                f"grad_fn.{'register_hook' if kind == 'node_hooks' else 'register_prehook'} on {self.name()}: "
                "torch's node for this call is one node with several outputs, whose hooks see every output's "
                "gradient at once; minilora runs one node per output, so it cannot hand them over together. "
                "Hook the output tensors (Tensor.register_hook) or the inputs instead")
        if kind == "node_hooks":
            _edge_slots(self)  # refuses a node whose grad_inputs minilora cannot show as torch's
        if self.__dict__.get(kind) is None:
            setattr(self, kind, {})
        if self.retained is None:
            self.retained = _no_tensor
        hooks = getattr(self, kind)
        handle = _HookHandle(hooks)
        hooks[handle.id] = hook
        return handle

    def free(self):
        """Drop everything saved: the graph has been used once (see ``retain_graph``). Its name and
        ``next_functions`` stay (torch keeps the links; the inputs, large arrays maybe, go).
        Backward runs this once per node, so the common cases are written out (as one comprehension
        they cost the tiny-op benchmark 4 ms per 10,000 ops: a comprehension is a call in Python 3.11)."""
        saved = self.__dict__
        keep = self.fn.kept_when_freed
        if "node_name" in saved or "torch_graph" in saved or keep is _NAMED_BY_FIELDS:
            self._keep_what_torch_keeps(saved)
        elif keep is None:
            saved.clear()
        else:  # torch's node keeps the sizes of its self, input ``keep`` (see Function.kept_when_freed)
            x = self.inputs[keep] if keep < len(self.inputs) else None
            known = "sizes_known" not in saved
            saved.clear()
            if known and isinstance(x, Tensor):
                self.kept_sizes = tuple(x.shape)
        # The parents stay; of the inputs, only what a leaf's or a number's entry needs: never an activation.
        # (Unary and binary ops are tested with `is`: `None in parents` compares each node with None by ==.)
        parents = self.parents
        if len(parents) == 2:
            (a, b), (p, q), (na, nb) = self.inputs, parents, self.needs_input_grad
            if p is None or q is None:  # a binary op with a weight, a leaf or a number among its inputs
                # (a leaf that needed a gradient is kept as it is: what _link would return)
                self.inputs = (None if p is not None else a if na else _link(a),
                               None if q is not None else b if nb else _link(b))
            else:
                self.inputs = ()
        elif len(parents) == 1 and parents[0] is not None or None not in parents:
            self.inputs = ()  # every input has a node: the parents are all next_functions needs
        else:
            self.inputs = [None if q is not None else _link(x) for x, q in zip(self.inputs, parents)]
        self.freed = True


    def _keep_what_torch_keeps(self, saved):
        """free() of a node whose shown name, edges or saved sizes and scalars read fields it clears: they are
        kept, as torch's node keeps its name, edges and non-tensor saved values after backward."""
        node_name = self.name()  # (read once, before the fields a name may be read from go; kept as it is)
        # (the graph's tensors, activations maybe, go; the nodes torch shows are made only if asked for: building
        # them here, for every LoRA layer's node in every step, was ~1-2 ms of a Llama LoRA step)
        graph = saved.get("torch_graph")
        frozen = None if graph is None else _frozen_graph(graph, {})
        output_nr = saved.get("output_nr")  # (a numbered output is a named node: kept at no cost to others)
        shared, outputs_shown = saved.get("shared_node"), saved.get("outputs_shown")
        user_ctx, shown_as = saved.get("user_ctx"), saved.get("shown_as")  # (a user Function's: see _CtxNode)
        values, alpha = saved.get("torch_values"), saved.get("torch_alpha")
        sizes = _input_sizes(self) if node_name in _SAVE_SELF_SIZES else _UNKNOWN
        module = saved.get("python_module")
        saved.clear()
        self.node_name = node_name
        if module is not None:  # (a user Function's node prints its module after backward too)
            self.python_module = module
        if frozen is not None:
            self.frozen_graph = frozen
        if output_nr is not None:
            self.output_nr = output_nr
        if shared is not None:
            self.shared_node = shared
        if outputs_shown is not None:
            self.outputs_shown = outputs_shown
        if user_ctx is not None:
            self.user_ctx, self.shown_as = user_ctx, shown_as
        if values is not None:
            self.torch_values = values
        if alpha is not None:
            self.torch_alpha = alpha
        if sizes is not _UNKNOWN:
            self.kept_sizes = sizes


_FLOAT_LEAF, _NO_EDGE = object(), object()  # what a freed node keeps of an input that needs no gradient
_NAMED_BY_FIELDS = "named by fields"  # Function.kept_when_freed of an op whose node's name reads its fields


def _edge(node):
    """A ``next_functions`` entry: the node and which of its outputs the input is (torch's output_nr: split's
    second piece is (SplitBackward0, 1)); minilora gives each output of such an op a node numbered so, shown
    as the call's one node (see share_node))."""
    if not isinstance(node, Context):
        return node, 0
    return _shown_shared(node), node.__dict__.get("output_nr", 0)


def share_node(outputs, numbers=None):
    """The outputs of one call that torch records as ONE node with several outputs (split's pieces, eigh's
    (L, Q), a user Function's outputs) are shown so: minilora's engine runs a node per output, and the first
    one's stands for all of them in ``grad_fn`` and ``next_functions`` (``y1.grad_fn is y2.grad_fn``), each
    edge numbered by its own output_nr (``numbers[i]``, else its place among the outputs that have a node:
    torch numbers the differentiable outputs only). Hooks on that node are refused (Context._add_node_hook):
    torch's see every output's gradient at once."""
    nodes = [t._ctx for t in outputs if isinstance(t, Tensor) and t._ctx is not None]
    if not nodes:
        return outputs
    first = nodes[0]
    for k, node in enumerate(nodes):
        node.node_name = node.name()  # (named: free() keeps what the shared view reads, _keep_what_torch_keeps)
        node.output_nr = k if numbers is None else numbers[k]
        if node is not first:
            node.shared_node = first
    if len(nodes) > 1:
        first.outputs_shown = len(nodes)
        _watch_siblings([t for t in outputs if isinstance(t, Tensor) and t._ctx is not None])
    return outputs


def _watch_siblings(outputs):
    """Each output's node remembers the other outputs as they are now: a node that saved a sibling's array (R's
    node reads Q) must see that sibling changed in place, as torch's one node, which saved both, does."""
    watches = [(t._ctx, t._version_counter(), id(_storage(t._array))) for t in outputs]
    for node, _, _ in watches:
        node.sibling_watch = [(counter, counter[0], storage, other.output_nr)
                              for other, counter, storage in watches if other is not node]


def _shown_shared(node):
    """The node shown for ``node`` (a Context): the call's first output's where several share one (share_node),
    and for a user Function's call, that node with its ctx (_CtxNode)."""
    shared = node.__dict__.get("shared_node")
    node = node if shared is None else _torch_typed(shared)
    return node if "user_ctx" not in node.__dict__ else _with_its_ctx(node)


class _CtxNode:
    """A user Function's node as torch shows it: torch's ``grad_fn`` of a custom Function IS its ctx
    (``y.grad_fn.saved_tensors``, ``.needs_input_grad``, the attributes forward set on ctx) and its graph node
    (``name()``, ``next_functions``, hooks). minilora keeps the two apart (the engine's node for the outputs, the
    user's FunctionCtx): this shows both, the ctx's attributes first. One per call while anyone holds it."""

    __slots__ = ("_node", "_ctx", "__weakref__")

    def __init__(self, node, ctx):
        self._node, self._ctx = node, ctx

    def name(self):
        return self._node.name()

    @property
    def next_functions(self):
        return self._node.next_functions

    def register_hook(self, hook):
        """``hook(grad_inputs, grad_outputs)`` after the user's backward (one grad_input per tensor argument)."""
        return self._joint_hook("posthooks", hook) or self._node.register_hook(hook)

    def register_prehook(self, hook):
        """``hook(grad_outputs)`` before the user's backward, one entry per output (None where none arrived)."""
        return self._joint_hook("prehooks", hook) or self._node.register_prehook(hook)

    def _joint_hook(self, kind, hook):
        """The hook kept by the call's joint (autograd._Joint), which runs it with every output's gradient at once,
        as torch's node; None once backward freed the node (its own refusal then answers)."""
        joint = self._node.__dict__.get("joint")
        return None if joint is None else joint.add_hook(kind, hook)

    @property
    def saved_tensors(self):
        self._node._refuse_freed()  # (torch's error after a backward that did not retain the graph)
        return self._ctx.saved_tensors

    def __getattr__(self, attribute):
        try:
            return getattr(self._ctx, attribute)
        except AttributeError:
            return getattr(self._node, attribute)

    def __repr__(self):
        return f"<{type(self).__module__}.{type(self).__name__} object at {id(self):#x}>"


_CTX_NODE_TYPES = {}


def _with_its_ctx(node):
    """``node`` (a user Function call's shown node) as a _CtxNode: the one alive, else a new one while the ctx
    lives (the node holds it weakly: kept after backward, it would keep the saved tensors alive)."""
    shown = node.__dict__.get("shown_as")
    shown = shown() if shown is not None else None
    if shown is None:
        ctx = node.user_ctx()
        if ctx is None:
            return node
        key = (type(node).__name__, type(node).__module__)
        kind = _CTX_NODE_TYPES.get(key)
        if kind is None:
            kind = _CTX_NODE_TYPES[key] = type(key[0], (_CtxNode,), {"__slots__": (), "__module__": key[1]})
        shown = kind(node, ctx)
        node.shown_as = weakref.ref(shown)
    return shown


def _link(x):
    """What a freed node keeps of a leaf input (or a number) for its next_functions: a leaf that requires
    grad itself (its AccumulateGrad shows it; alive anyway), else a marker, so no data stays alive."""
    if not isinstance(x, Tensor) or x._requires_grad:
        return x
    return _FLOAT_LEAF if _is_float(x._array.dtype) else _NO_EDGE


def _edges_of(graph):
    """next_functions of a node shown as ``graph`` (a torch_graph, or a freed node's frozen one)."""
    shown = {}  # (one node per entry met twice: a circular pad's copies read the tensor they write)
    # (a number among torch's inputs has no entry, as in torch's nodes)
    return tuple(_edge(_shown_node(x, shown)) for x in graph if not isinstance(x, (int, float, complex)))


def _frozen_graph(entry, frozen):
    """A torch_graph entry as a freed node keeps it: each tensor replaced by what its edge shows, found now (the
    node it came from, past casts torch makes inside an op, as _input_node; a leaf that requires grad, for its
    AccumulateGrad; else None), so no activation stays alive; _shown_node makes the nodes if next_functions
    is asked. ``frozen``: {id of a tuple: its frozen copy}, so an entry met twice stays one."""
    if isinstance(entry, tuple):
        copy = frozen.get(id(entry))
        if copy is None:
            copy = frozen[id(entry)] = (entry[0], *[_frozen_graph(x, frozen) for x in entry[1:]])
        return copy
    if not isinstance(entry, Tensor):
        return entry  # (a node, a number, None)
    x, parent = entry, entry._own_node()
    while parent is not None and parent.fn.shown_as_its_input:
        x, parent = (parent.inputs[0] if parent.inputs else None), parent.parents[0]
    if parent is not None:
        return parent
    return x if isinstance(x, Tensor) and x._requires_grad else None


def _has_edge(x, numbers):
    """Has this input (no node of its own) an entry in torch's next_functions? (See Context.)"""
    if isinstance(x, Tensor):
        return _is_float(x._array.dtype)
    if x is _FLOAT_LEAF or x is _NO_EDGE:
        return x is _FLOAT_LEAF
    return numbers


# minilora's ops that torch knows under another name (the same op; print(loss.grad_fn) shows torch's)
_TORCH_OP_NAMES = {"CrossEntropy": "NllLoss", "MaxPool2d": "MaxPool2DWithIndices", "AvgPool2d": "AvgPool2D",
                   "AdaptiveAvgPool2d": "AdaptiveAvgPool2D", "AvgPool3d": "AvgPool3D",
                   "AdaptiveAvgPool3d": "AdaptiveAvgPool3D", "Reshape": "View", "AsType": "ToCopy", "PromotionCast": "ToCopy",
                   "CumSum": "Cumsum", "LayerNorm": "NativeLayerNorm", "AMax": "Amax", "AMin": "Amin",
                   "Conv1d": "Convolution", "Conv2d": "Convolution", "CumProd": "Cumprod", "Log1p": "Log1P",
                   "LogAddExp": "Logaddexp", "XLogY": "Xlogy", "LogCumSumExp": "Logcumsumexp",
                   "AdaptiveMaxPool2d": "AdaptiveMaxPool2D", "MaxUnpool2d": "MaxUnpool2D", "MedianAll": "Median"}


# torch's argument names for a node's inputs, as its saved tensors are called (``grad_fn._saved_mat2``), by
# the node's name, where they are not ``("self", "other")`` (a node named for the call: none, see
# Context._torch_argument_names). None: an input torch's node does not save under its own name.
_SAVED_AS = {
    "MmBackward0": ("self", "mat2"), "BmmBackward0": ("self", "mat2"), "DotBackward0": ("self", "tensor"),
    "MvBackward0": ("self", "vec"), "AddmmBackward0": ("mat1",), "AddcmulBackward0": (None, "tensor1", "tensor2"),
    "ClampBackward0": ("self", "min", "max"), "GatherBackward0": ("self",), "IndexCopyBackward0": (None, "source"),
    "IndexReduceBackward0": ("self", "source"), "ScatterReduceBackward0": ("self", "src"),
    "LogSigmoidBackward0": ("self",), "NativeLayerNormBackward0": ("input", "weight", "bias"),
    "ConvolutionBackward0": ("input", "weight"), "PowBackward1": ("self", "exponent"),
    "EmbeddingBackward0": ("indices",), "CtcLossBackward0": ("log_probs",),
    "BinaryCrossEntropyWithLogitsBackward0": ("self", "target"),
    "SortBackward0": (None, "indices"), "SortBackward1": (None, "indices"), "TopkBackward0": (None, "indices"),
    "MaxBackward0": (None, "indices"), "MinBackward0": (None, "indices"),
    "TriangularSolveBackward0": ("A", "self"), "LinalgDetBackward0": ("A",), "LinalgSlogdetBackward0": ("A",),
    "LinalgSolveExBackward0": ("A",), "LinalgPinvBackward0": ("self",),
    "WhereBackward0": (), "MaskedFillBackward0": (), "MaskedFillBackward1": (), "NllLossBackward0": (),
    "MaxPool2DWithIndicesBackward0": (), "MaxUnpool2DBackward0": (),
    "AminBackward0": ("self",), "CeluBackward0": ("self",), "VdotBackward0": ("self", "other"),
    "PowBackward0": ("self",), "AsStridedBackward0": (), "torch::autograd::CopySlices": (),
    "ClampMinBackward0": ("self",), "ClampMaxBackward0": ("self",), "ClampMinBackward1": ("self", "min", "max"),
    "ClampMaxBackward1": ("self", "min", "max"), "IndexPutBackward0": (), "FillBackward3": (),
    "CdistBackward0": (), "FrexpBackward0": (), "RenormBackward0": ("self",), "LinalgLuSolveBackward0": (),
    "SpecialEntrBackward0": ("self",),
    "torch::autograd::CopyBackwards": (),
}


# torch's name for the output its node saves, where not ``result`` (std_mean's first output: ``_saved_result0``)
_RESULT_AS = {"StdMeanBackward0": "result0", "AminmaxBackward0": "min"}  # (the shared node is the first output's: see share_node)

# torch's nodes that save each operand of a product for the other's gradient only (see _saved_for_the_other)
_SAVED_FOR_THE_OTHER = {"MulBackward0"}

# torch 2.13's nodes with a ``_saved_self_sym_sizes`` (the classes of torch._C._functions that have it)
_SAVE_SELF_SIZES = frozenset("""
    DiagonalBackward0 ExpandBackward0 IndexBackward0 IndexSelectBackward0 KthvalueBackward0 MaxBackward0
    MeanBackward0 MeanBackward1 MedianBackward1 MinBackward0 MmBackward0 ModeBackward0 NanmedianBackward1
    NarrowCopyBackward0 RepeatBackward0 ReshapeAliasBackward0 SelectBackward0 SliceBackward0 SortBackward0
    SortBackward1 SplitBackward0 SplitWithSizesBackward0 SqueezeBackward0 SqueezeBackward1 SqueezeBackward2
    SqueezeBackward3 SqueezeBackward4 SqueezeBackward5 SumBackward0 SumBackward1 TopkBackward0 TraceBackward0
    UnfoldBackward0 UnsafeSplitBackward0 UnsafeSplitWithSizesBackward0 UnsafeViewBackward0
    UpsampleBicubic2DBackward0 UpsampleBilinear2DBackward0 UpsampleLinear1DBackward0 UpsampleNearest1DBackward0
    UpsampleNearest2DBackward0 UpsampleNearest3DBackward0 UpsampleTrilinear3DBackward0 ViewBackward0
    """.split())
_UNKNOWN = object()  # a saved value minilora's node does not know


def _self_sizes(node):
    if node.freed:
        return node.__dict__.get("kept_sizes", _UNKNOWN)  # (what free() kept: _keep_what_torch_keeps)
    return _input_sizes(node) if node.name() in _SAVE_SELF_SIZES else _UNKNOWN


def _input_sizes(node):
    """The sizes of the input torch's node calls ``self`` (a node named as one that saves them)."""
    x = node._torch_self() if node.__dict__.get("sizes_known", True) else None  # (inputs_not_torchs)
    return _UNKNOWN if x is None else tuple(x.shape)


def _alpha(node):
    """add/sub's ``alpha`` as given (1 unless the call said otherwise: ops.elementwise._with_alpha)."""
    if node.name() not in ("AddBackward0", "SubBackward0", "RsubBackward0", "RsubBackward1"):
        return _UNKNOWN
    return node.__dict__.get("torch_alpha", 1)


def _given(name, nodes):
    """A reader of the value the call gave (shows_values) for the ``nodes`` it is torch's value on, in torch's
    form: a dim list as a tuple, each negative dim as torch's node shows it (an int64 read back as uint64)."""
    def read(node):
        values = node.__dict__.get("torch_values")
        if values is None or name not in values or node.name() not in nodes:
            return _UNKNOWN
        value = values[name]
        if name != "dim":
            return value
        dims = (value,) if isinstance(value, int) else value
        return tuple(int(d) % 2 ** 64 for d in dims)  # (torch's IntArrayRef getter: -1 -> 2**64 - 1)
    return read


_REDUCTIONS = ("SumBackward1", "MeanBackward1", "NansumBackward0")  # (their dim: a list, as torch's sum.dim_IntList)


# torch's saved sizes and scalars minilora's nodes know, by torch's name (``grad_fn._saved_alpha``): each reader
# answers for the nodes torch saves it on, _UNKNOWN elsewhere
_SAVED_VALUES = {"self_sym_sizes": _self_sizes, "alpha": _alpha,
                 "dim": _given("dim", _REDUCTIONS), "keepdim": _given("keepdim", _REDUCTIONS)}


def forward_ad_open():
    """Is a torch.autograd.forward_ad level open (so tangents may ride along)?"""
    return _forward_ad is not None


def no_forward_formula(name, *tensors):
    """torch has no forward-mode formula for op ``name`` (its ATen name): with a forward-AD level open and a
    dual tensor among ``tensors``, torch's NotImplementedError naming it (minilora/forward_ad.py)."""
    if _forward_ad is not None:
        _forward_ad.refuse_duals(name, tensors)


_NONZERO_ON_META = ("The register_meta function for torch.nonzero() raises unimplemented by default, as a correct "
                    "data-independent implementation does not exist. This implementation returns a fake value, "
                    "assuming all elements of the tensor are non-zero. To enable this registration, please set "
                    "'torch.fx.experimental._config.meta_nonzero_assume_all_nonzero' to True.")


def no_meta_kernel(name, *tensors):
    """An op whose result's shape (or Python value) depends on the values (nonzero, unique, equal ...): on a
    meta tensor, whose zeros are no values, torch's NotImplementedError naming its ATen op ``name``."""
    if not any(isinstance(t, Tensor) and t._device is _META for t in tensors):
        return
    if name == "nonzero":
        raise NotImplementedError(_NONZERO_ON_META)
    raise NotImplementedError(f"aten::{name}: attempted to run this operator with Meta tensors, but there was no fake "
                              f"impl or Meta kernel registered. You may have run into this message while using an "
                              f"operator with PT2 compilation APIs (torch.compile/torch.export); in order to use this "
                              f"operator with those APIs you'll need to add a fake impl. Please see the following for "
                              f"next steps:  https://pytorch.org/tutorials/advanced/custom_ops_landing_page.html")


def no_meta_positions(into, *indices):
    """Positions read on the host (an index, embedding ids) from a meta tensor, for a tensor ``into`` that has
    values: zeros that are no positions would pick real rows, so torch's device error instead."""
    if into._device is not _META and any(isinstance(t, Tensor) and t._device is _META for t in indices):
        raise RuntimeError(f"Tensor on device meta is not on the expected device {into._device.name}!")


def no_complex_autograd(name, dtype, *tensors):
    """torch's refusal of an op whose derivative it has for real numbers only (nan_to_num, slice_scatter,
    embedding ...): a complex result (``dtype``) recorded for backward raises before the op runs."""
    if dtype.kind == "c" and _mode.grad_enabled and any(isinstance(t, Tensor) and t._requires_grad for t in tensors):
        raise RuntimeError(f"{name} does not support automatic differentiation for outputs with complex dtype.")


def name_node(result, name, *inputs, graph=None):
    """Give the node that made ``result`` torch's name for this call (``x.t()`` runs minilora's Permute;
    torch prints TBackward0). Nothing when ``result`` has no node of its own: no grad, or an input itself.
    ``inputs``: torch's node's inputs; where minilora's last op has others (frac's truncation, a number), they
    are the node's shown edges. ``graph``: the inputs torch's node has, where they are not those (tensors, None,
    or ``(name, *inputs)`` for a node torch has and minilora not, as Linear's ``weight.t()``:
    ``("TBackward0", weight)``)."""
    node = result._ctx  # (not grad_fn: a node is given its class when shown, not here)
    if node is not None and not any(result is x for x in inputs):
        _rename(node, name)
        if graph is None and inputs and (len(node.inputs) != len(inputs)
                                         or any(a is not b for a, b in zip(node.inputs, inputs))):
            graph = inputs  # (the op's last node has other inputs than torch's: frac's trunc, deg2rad's number)
        if graph is not None:
            node.torch_graph = graph
    return result


def shows_values(result, **values):
    """The sizes and scalars torch's node for this call saves, as the call gave them (``x.sum(-1)``'s
    ``_saved_dim``, ``_saved_keepdim``): answered by the node's ``grad_fn._saved_<name>`` (see _SAVED_VALUES)."""
    node = result._ctx
    if node is not None:
        node.torch_values = values
        node.node_name = node.name()  # (named: free() keeps the values, _keep_what_torch_keeps)
    return result


def inputs_not_torchs(result):
    """The node that made ``result`` is named as torch's but minilora computes it from other inputs than torch's
    (conv1d's squeeze of a dimension torch adds elsewhere): it answers no sizes read from its inputs."""
    node = result._ctx
    if node is not None:
        node.sizes_known = False
    return result


def saves_as_torch(result, *saved):
    """Tell the version check at backward what torch's op saves for backward (its derivatives.yaml:
    ``self``, ``other``, ``result``...), where minilora's arrays say otherwise: an op that keeps a mask
    where torch keeps the input (``amax``), one that keeps its input where torch keeps the result
    (``reciprocal``), or several ops where torch runs one (``mse_loss``). Changing one of ``saved`` in
    place before backward is then torch's error, and changing anything else is not. ``saved`` may name
    ``result`` itself, so it must be a tensor the call made (not an input passed through)."""
    node = result._own_node()
    if node is not None:
        node.torch_saved = tuple((_RESULT, x._array) if x is result else (x, x._version)
                                 for x in saved if isinstance(x, Tensor))
        if _saved_hooks_used and _mode.saved_hooks:
            _pack_torch_saved(node, result)
    return result


def backward_reads(result, *inputs, zeros=True):
    """torch's backward of the call that made ``result`` is one ATen function of ``inputs``
    (``hardtanh_backward(grad, self)``, ``convolution_backward(grad, input, weight)``), so under
    create_graph=True the gradients it gives are recorded with them: they require grad (and have a grad_fn)
    wherever one of ``inputs`` does, even where minilora's own formula multiplies by a constant mask. Their
    derivative in ``inputs`` is zeros (``zeros``: a piecewise-constant formula's ``zeros_like(self)``) or
    none (a bias's gradient, ``sum(grad)``). ops/higher_order.py joins the node's gradients to them."""
    node = result._own_node()
    if node is not None and not any(result is x for x in inputs):
        reads = tuple(x for x in inputs if isinstance(x, Tensor) and x._requires_grad)
        if reads:
            node.backward_reads = (reads, zeros)
    return result


def saved_for(x, *others):
    """``x`` where one of ``others`` requires grad, else None: torch saves an operand only for the
    gradients that read it (``x @ w`` keeps ``x`` for ``w``'s gradient: not when ``w`` is frozen)."""
    return x if any(getattr(o, "_requires_grad", False) for o in others) else None


def saving_as_torch(*names):
    """Decorator of an op function that minilora builds from several ops where torch runs one
    (``mse_loss``, ``layer_norm``, ``conv2d``...): its result's node saves the arguments ``names``,
    as torch's node does (see saves_as_torch). Nothing is bound unless the result has a node."""
    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def op(*args, **kwargs):
            if _saved_hooks_used and _mode.saved_hooks:  # the inner ops are not torch's: only the
                with _hooks_paused():  # one node torch has packs (in saves_as_torch below)
                    result = fn(*args, **kwargs)
            else:
                result = fn(*args, **kwargs)
            out = result[0] if isinstance(result, tuple) else result  # ((values, indices): the values)
            if getattr(out, "_ctx", None) is not None:
                arguments = signature.bind_partial(*args, **kwargs).arguments
                saves_as_torch(out, *(arguments.get(name) for name in names))
            return result
        return op
    return decorate


_RESULT = "result"  # saves_as_torch's entry for the node's own output: (_RESULT, its array), not the
# tensor (a reference to it would be a cycle)


# torch's arithmetic takes a Python number as a 0-d tensor: an input, with a None entry in next_functions
_WRAPPED_NUMBERS = {"Add", "Sub", "Mul", "Div", "RoundedDiv", "IndexPut"}  # (index_put: x[i] = 5.0)


def _is_float(dtype):
    return dtype.kind == "f" or _is_bfloat16(dtype)


def _input_node(x, parent):
    """An input's entry in next_functions: its node, AccumulateGrad for a leaf that requires grad, or None."""
    if parent is not None:
        if parent.fn.shown_as_its_input:  # (a cast inside torch's op: its input is the op's edge)
            return _input_node(parent.inputs[0] if parent.inputs else None, parent.parents[0])
        return _torch_typed(parent)
    return _accumulator(x) if isinstance(x, Tensor) and x._requires_grad else None


# A leaf's AccumulateGrad, while anyone holds it: one object per leaf, as torch's (a walk over the graph
# meets the same node from every path). Keyed by id: the node holds its leaf, so the id is not reused.
_accumulators = weakref.WeakValueDictionary()


def _accumulator(leaf):
    node = _accumulators.get(id(leaf))
    if node is None:
        node = _accumulators[id(leaf)] = AccumulateGrad(leaf)
    return node


def _shown_node(x, shown=None):
    """An entry of a ``torch_graph`` as a node (see name_node): a tensor, (name, *inputs), or a node itself.
    ``shown``: {id of an entry: its node} for one graph, so an entry met twice is one node, as in torch's."""
    if isinstance(x, (Context, AccumulateGrad, _ShownNode)):
        return _torch_typed(x)
    if isinstance(x, tuple):
        if shown is not None and id(x) in shown:
            return shown[id(x)]
        name, *inputs = x
        nodes = [_shown_node(i, shown) for i in inputs]  # (each once: asking twice doubled the calls at every level)
        node = None  # (torch's node is there only where a gradient flows: Linear's t() of a frozen weight)
        if any(n is not None for n in nodes):
            kind = _NODE_TYPES.get(("shown", name))
            if kind is None:  # (named as torch's class, as a Context is: see _NODE_TYPES)
                kind = _NODE_TYPES["shown", name] = type(name.rpartition("::")[2], (_ShownNode,),
                                                         {"__module__": "builtins"})  # (CopySlices' class)
            node = kind(name, tuple((n, 0) for n in nodes))
        if shown is not None:
            shown[id(x)] = node
        return node
    return None if x is None else _input_node(x, x._own_node())


class _ShownNode:
    """A node of torch's graph that minilora's has no counterpart for (Linear's ``weight.t()``): shown in
    next_functions, never run."""

    def __init__(self, name, next_functions):
        self._name, self.next_functions = name, next_functions

    def name(self):
        return self._name

    def __repr__(self):
        return f"<{self._name.rpartition('::')[2]} object at {id(self):#x}>"

    def register_hook(self, hook):
        raise self._never_runs("register_hook")

    def register_prehook(self, hook):
        raise self._never_runs("register_prehook")

    def _never_runs(self, method):
        """A hook here would never be called: refused rather than silently ignored."""
        return NotImplementedError(f"grad_fn.{method} on {self._name}: minilora's graph has no such node (it "
                                   "computes it inside the node above it, or needs none), so a hook on it would "
                                   "never run; hook the node above (register_prehook) or a tensor "
                                   "(Tensor.register_hook) instead")


# A node's class is named as torch's (``type(y.grad_fn).__name__ == "MulBackward0"``, printed
# ``<class 'MulBackward0'>``): Function.apply makes every node a plain Context, and the first look at it
# (Tensor.grad_fn, next_functions) gives it a subclass of Context named by name(), one class per name,
# so naming costs no op call anything.
_NODE_TYPES = {}


def _torch_typed(node):
    """``node`` (a Context, or None) with its class named as torch's node (see _NODE_TYPES)."""
    if type(node) is Context:
        name = node.name().rpartition("::")[2]  # (torch's CopySlices class prints torch::autograd::CopySlices)
        module = node.__dict__.get("python_module", "builtins")  # (a user Function's node: its module's class)
        kind = _NODE_TYPES.get((name, module))
        if kind is None:  # (module "builtins": repr(type(node)) is torch's <class 'MulBackward0'>)
            kind = _NODE_TYPES[name, module] = type(name, (Context,), {"__slots__": (), "__module__": module,
                                                                        "__getattr__": Context._saved_by_torch_name})
        node.__class__ = kind
    return node


def _rename(node, name):
    """Give ``node`` torch's name for this call (see name_node), its class too if it was shown already."""
    node.node_name = name
    if type(node) is not Context:
        node.__class__ = Context
        _torch_typed(node)


class AccumulateGrad:
    """torch's node for a leaf tensor in ``next_functions``: backward adds into ``variable.grad``."""

    def __init__(self, variable):
        self.variable = variable
        self.next_functions = ()

    def name(self):
        return "torch::autograd::AccumulateGrad"

    def __repr__(self):
        return f"<AccumulateGrad object at {id(self):#x}>"


_new_node = object.__new__  # (Function.apply makes a Context without calling its __init__)
_sequence = itertools.count(1)  # numbers recorded nodes (and in-place changes) in creation order
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)
_is_bfloat16 = dtypes.is_bfloat16  # (NumPy files bfloat16 under kind 'V', not 'f')
# Every node keeps its needs_input_grad tuple, such as (True, False), until backward. Sharing one tuple
# per pattern (for up to 4 inputs) leaves one object fewer behind per op, and Python's garbage collector
# runs the less often, the fewer objects are left behind: the tiny-op benchmark ran 15% faster.
_SHARED_FLAGS = {}
_last_change = 0  # the number drawn by the latest in-place change to any tensor (see _bump_version)


class Function:
    """Base class of every op. Subclasses write two static methods on raw arrays:

    ``forward(ctx, *arrays, **options) -> array`` and ``backward(ctx, grad) -> grad or tuple``
    with one entry per positional input (``None`` where no gradient is needed). Optional
    ``flops(ctx, arrays, out)`` / ``backward_flops(ctx)`` feed the profiler.

    An op with hand-written CUDA kernels also writes ``kernel_forward`` / ``kernel_backward`` (same
    signatures). ``apply`` runs them instead of ``forward`` / ``backward`` on a device that launches
    kernels (``emu``, ``cuda``) when ``minilora.kernels`` takes the inputs' dtype, so ``forward`` and
    ``backward`` stay the NumPy math (``minilora.ops.lora`` is the example).
    """

    kernel_forward = kernel_backward = None
    # optional ``(ctx) -> [input position or ctx attribute name, ...]``: what torch's node(s) save, in
    # order, where the op keeps more or other (Linear keeps the weight for its shape): what saved-tensor
    # hooks pack (see _pack_saved). None from it: what the op keeps, as without it
    torch_saves = None
    # torch's node name where one Function serves several torch ops: ``(ctx) -> "AcosBackward0"`` from what
    # forward kept on ctx, asked only when the node is shown (print(y.grad_fn)), never per op call. None:
    # the Function's own name, in torch's words (_TORCH_OP_NAMES), with "Backward0"
    torch_node_name = None
    # torch's names for the op's inputs, as its node's saved tensors are called (``grad_fn._saved_self``), where
    # tensor._SAVED_AS has no row for the node's name
    torch_inputs = ("self", "other")
    kernel_supports = None  # optional ``(*arrays) -> bool``: which inputs the kernels take (default: float32)
    complex_grad = False  # does ``backward`` take a complex gradient? True, "holomorphic" or False (see
    # _complex_node_backward; minilora.complex_numbers sets it)
    # torch's layout of the result when an input is channels_last (see _torch_layout): "elementwise" (the
    # TensorIterator's rule: the inputs' order of strides), "preserve" (a preserve_format copy of the first
    # input: .to(dtype)), "suggested" (the first input's suggested memory
    # format: conv2d, the 2-D pools, constant pads), "contiguous" (softmax, layer_norm, cumsum: torch's CPU kernels
    # write a contiguous result), "own" (forward lays it out itself: clone); None: the
    # layout is not known, so stride() and is_contiguous() refuse a C-contiguous result
    torch_layout = None
    # the positions of the inputs that are a 0-d tensor operand of torch's TensorIterator when given as a
    # Python number ("elementwise" ops: ``x + 1`` wraps the 1, ``x ** 2`` and ``x.clamp(0, 1)`` do not); a call's
    # option ``laid_out_from=`` (positions) names the only inputs torch's iterator sees, where they differ
    # (threshold's mask and fill value are no operands of its kernel: Where)
    torch_number_operands = ()
    # what free() keeps of this op's nodes, set for each subclass (__init_subclass__): None (nothing but what a
    # call's name_node asks), _NAMED_BY_FIELDS (its name is read from fields: Context._keep_what_torch_keeps),
    # or the position of the input torch's node calls self, whose sizes it saves (SumBackward0, ViewBackward0)
    kept_when_freed = None
    # True for a cast torch makes inside the op that reads it (an operand's type promotion, an op's dtype=):
    # torch's graph has no node for it, so next_functions shows the cast's input in its place (_input_node)
    shown_as_its_input = False
    # where torch's op is a custom Function that returns its input as a view (a module's backward hooks'
    # BackwardHookFunction): ``refuses_inplace(ctx)`` names the output ("Output 0 of BackwardHookFunction"), and
    # changing it in place is torch's error (its autograd would lose the Function's backward)
    refuses_inplace = None
    # the meta device's kernel (minilora/ops/meta.py): ``meta_shape(*arrays, **options)`` -> the result's shape
    # without computing it, or None (inputs the rule does not take: the op runs on the meta zeros, raising its own
    # error); ``meta_dtype`` the same for the dtype where the op cannot run on one element of each input;
    # ``meta_small`` the stand-ins it runs on instead; ``meta_order`` how the result is laid out where that is not
    # C order or torch's TensorIterator's. ``meta_gradients``: on meta, does backward give each input zeros of its
    # shape without running the op's backward (False for a user's autograd.Function, whose backward torch runs)?
    meta_shape = meta_dtype = meta_small = meta_order = None
    meta_gradients = True
    # optional ``(ctx, grad, so_far, writable) -> gradients``: ``backward``, with the gradient that the first input's
    # other uses gave so far (``so_far``; None: none yet; ``writable``: the engine's own array, to add onto in place)
    # added in: the first entry is the new sum. For an op that is two of torch's nodes (a LoRA layer: the base layer
    # and the adapter branch), whose two parts torch's engine adds one after the other (_backward_onto)
    backward_onto = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        op = cls.__name__  # (a node named otherwise by its call goes through name_node: kept by its node_name)
        name = f"{_TORCH_OP_NAMES.get(op, op)}Backward0"
        names = _SAVED_AS.get(name, cls.torch_inputs)
        if cls.torch_node_name is not None:
            cls.kept_when_freed = _NAMED_BY_FIELDS
        elif name in _SAVE_SELF_SIZES and "self" in names:
            cls.kept_when_freed = names.index("self")

    @staticmethod
    def forward(ctx, *arrays, **options):
        raise NotImplementedError  # abstract: every op defines its own

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError  # abstract: every op defines its own

    @staticmethod
    def flops(ctx, arrays, out):
        return 0

    @staticmethod
    def backward_flops(ctx):
        return 0

    @classmethod
    def apply(cls, *inputs, **options):
        """Run ``forward`` on the raw arrays; record a graph node only if an input needs a gradient.

        This runs once per op call, so it is kept lean: one pass over the inputs, no graph work
        at all when nothing requires grad (inference, optimizer updates, ``no_grad()``).
        """
        if _batching is not None and not _batching.busy:  # inside vmap: the result is batched where an input is
            return _batching.apply(cls, inputs, options)
        if _forward_ad is not None:  # a forward-AD level is open: a dual input's tangent rides along
            result = _forward_ad.dual_apply(cls, inputs, options)
            if result is not None:
                return result
        grad_on = _mode.grad_enabled
        dev = None
        arrays, needs, parents = [], [], []  # parents: each input's node now (kept if recorded)
        changed = False  # has an input been changed in place before (a version other than 0)?
        # may an input's strides not be NumPy's C order (a view, or some array's torch strides were told to
        # factories.known_layout)? Then an elementwise result is laid out from them (_torch_layout)
        strided = _layouts_remembered
        narrow = False  # a 16-bit input? (then NumPy's overflow/invalid/divide warnings are silenced)
        for x in inputs:
            if isinstance(x, Tensor):
                need = grad_on and x._requires_grad
                counter = x._counter
                if counter is not None:  # viewed, or changed in place, at some point: look closer
                    if x._view is not None and grad_on and x._view[4] != counter[0]:
                        _refresh_view(x)  # its base changed in place since the view's node was made
                        need = x._requires_grad
                    if counter[0]:
                        changed = True
                    if x._base is not None:
                        strided = True
                        # a view without a node (made under no_grad) requires grad when its base does: the op
                        # is recorded, and the gradient for it goes nowhere (at backward: no .grad of its own)
                        need = need or grad_on and x._base._requires_grad
                if dev is None:
                    dev = x._device
                elif x._device is not dev:
                    dev = _device_of_mixed(cls, inputs)
                array = x._array
                arrays.append(array)
                if array.itemsize == 2:
                    narrow = True
                needs.append(need)
                parents.append(x._ctx)
            else:  # Python/NumPy scalars and None pass straight through
                arrays.append(x)
                needs.append(False)
                parents.append(None)
        fn = cls
        if dev is not None and dev.dispatches:  # emu/cuda: the op's .cu kernel; meta: its shape rule (ops/meta.py)
            fn = _dispatched(cls, dev, arrays)
        needs = tuple(needs)
        if len(needs) <= 4:  # one shared tuple per pattern: see _SHARED_FLAGS
            needs = _SHARED_FLAGS.setdefault(needs, needs)
        # The node's fields are set here rather than by Context.__init__ (a call less per op): what
        # forward reads now, the graph's fields below once the node is recorded (an unrecorded node is
        # dropped after forward).
        ctx = _new_node(Context)
        ctx.fn, ctx.device, ctx.needs_input_grad = fn, dev, needs
        try:
            if narrow:  # float16 overflows at 65504: inf, nan, 1/0 silently, as torch (NumPy would warn)
                with np.errstate(all="ignore"):
                    out = _forward(cls, fn, ctx, arrays, options)
            elif profiler.active is None:  # (no options, the common case: no keyword dict to build)
                out = fn.forward(ctx, *arrays, **options) if options else fn.forward(ctx, *arrays)
            else:
                out = _forward(cls, fn, ctx, arrays, options)
        except ValueError as exc:  # NumPy's broadcast error in any op: torch's RuntimeError (ShapeError)
            if not _is_broadcast_error(exc):
                raise
            shapes = [a.shape for a in arrays if isinstance(a, np.ndarray)]
            raise ShapeError(torch_broadcast_message(shapes) or f"{cls.__name__}: {exc}") from None
        except (MemoryError, RuntimeError) as exc:  # CuPy's out-of-memory and CUDA errors: torch's classes
            raise_device_error_as_torch(exc)
            raise
        if type(out) is not np.ndarray and isinstance(out, np.generic):  # NumPy turns 0-d results
            out = np.asarray(out)  # into scalars; keep arrays
        if out.ndim > 3 or (strided or not out.size) and out.ndim:  # (channels_last is 4-D or 5-D; an empty
            # result: torch's TensorIterator orders a dimension of size 0 before one of size 1, NumPy does not)
            out = _torch_layout(cls, ctx, out, arrays, options, inputs if strided or not out.size else None)
        # Only a result that is an input's array, or a view of some array, can be a view of an input:
        # a fresh result (almost every op) skips the search.
        fresh = out.base is None
        if fresh:
            for a in arrays:
                if a is out:
                    fresh = False
                    break
        # Integer/bool results never carry a gradient (torch). (`is float32`: the common case, quickly.)
        if True in needs and (out.dtype is _FLOAT32 or out.dtype.kind in "fc" or _is_bfloat16(out.dtype)):
            ctx.inputs, ctx.parents, ctx.seq = inputs, parents, next(_sequence)
            ctx.freed, ctx.retained = False, None
            if _inference_tensors_made:
                _refuse_saved_inference_tensors(ctx, inputs)
            if changed:
                ctx.versions = tuple(_version_of(x) for x in inputs)
            result = _new_tensor(out, dev, True, ctx)
            if not fresh:
                _share_storage(result, inputs, cls, options)
                ctx.watch_output(result)
            if _saved_hooks_used and _mode.saved_hooks:  # (one global read when no hooks were ever used)
                _pack_saved(ctx, inputs, result)
            return result
        result = _new_tensor(out, dev, False, None)
        if not fresh:
            _share_storage(result, inputs, cls, options)
        return result


def _device_of_mixed(cls, inputs):
    """The device of an op whose tensors are on more than one (Function.apply's slow path). With ``meta``
    among them torch's rule: a 0-d CPU tensor goes with any device (as a number would); any other
    tensor must be on the first one's device, or torch's RuntimeError names both."""
    tensors = [x for x in inputs if isinstance(x, Tensor)]
    devices = {x._device for x in tensors}
    if _META not in devices:
        first = tensors[0]._device
        other = next(x._device for x in tensors if x._device is not first)
        raise RuntimeError(f"{cls.__name__}: expected all tensors on the same device, "
                           f"got {first.name} and {other.name}; move one with .to()")
    placed = [x for x in tensors if not (x._device.type == "cpu" and x.ndim == 0)] or tensors
    expected = placed[0]._device
    for x in placed:
        if x._device is not expected:
            raise RuntimeError(f"Tensor on device {x._device.name} is not on the expected device {expected.name}!")
    return expected


_unknown_layouts_made = False  # has factories.unknown_layout marked any array? (_torch_layout's quick exit)
_layouts_remembered = False  # has factories.known_layout been told any array's torch strides? (Function.apply)


def _torch_layout(cls, ctx, out, arrays, options, strided_inputs=None):
    """``out`` (a 4-D or 5-D result, or any result from ``strided_inputs``: inputs among which may be a
    view or a tensor whose strides are not C order) laid out as torch lays it out when an input is
    channels_last or of unknown layout, by ``cls.torch_layout``'s rule; a result minilora has no rule for is
    marked unknown (factories.unknown_layout: stride() refuses it) rather than claimed C-contiguous."""
    if strided_inputs is not None and cls.torch_layout in ("elementwise", "preserve") and not options.get("contiguous"):
        numbers, positions = cls.torch_number_operands, options.get("laid_out_from") if options else None
        if positions is not None:  # (the op's own choice of the inputs torch's iterator sees: see Where)
            strided_inputs, numbers = [strided_inputs[i] for i in positions], ()
        laid_out = _iterator_result(out, strided_inputs, cls.torch_layout, numbers)
        if laid_out is not None:
            if laid_out is not out:
                _resave_output(ctx, out, laid_out)
            return laid_out
    if out.ndim < 4:
        # (contiguous, or suggested: a 3-D input's suggested memory format is contiguous; NumPy kept a view's
        # order where forward did not lay the result out itself)
        if cls.torch_layout in ("contiguous", "suggested") and not out.flags.c_contiguous and not sys.modules[
                __package__ + ".factories"].layout_is_known(out):
            laid_out = _xp_of(out).ascontiguousarray(out)
            _resave_output(ctx, out, laid_out)
            return laid_out
        return out
    for a in arrays:  # the common case first, cheaply: C-contiguous inputs and no unknown layout anywhere
        if type(a) is np.ndarray and a.ndim > 3 and not a.flags.c_contiguous:
            break
    else:
        if not _unknown_layouts_made:
            return out
    factories = sys.modules[__package__ + ".factories"]  # (imported by now; an import statement costs more)
    inputs = [a for a in arrays if isinstance(a, np.ndarray) and a.ndim]
    unknown = any(factories.layout_unknown_of(a) for a in inputs)  # (a view of such a result too)
    if not unknown and not any(factories.suggested_format(a) is not factories.contiguous_format
                               for a in inputs):
        return out
    if out.base is not None and any(out.base is a or out.base is a.base for a in inputs):
        return out  # a view of an input: stride() follows its base
    rule = cls.torch_layout
    if rule == "own" and unknown and options.get("memory_format") in (None, factories.preserve_format):
        return factories.unknown_layout(out)  # (clone() keeps a layout minilora does not know)
    if rule == "own" or options.get("contiguous") or (not unknown and factories.layout_is_known(out)):
        return out
    if rule == "contiguous":  # (whatever the input's layout, known or not)
        laid_out = out if out.flags.c_contiguous else np.ascontiguousarray(out)
    elif rule is None or unknown:
        return factories.unknown_layout(out)
    elif rule in ("elementwise", "preserve"):
        laid_out = factories.in_iterator_layout(out, inputs)
    else:  # "suggested": the first input's memory format (channels_last where its rank is the result's)
        format = factories.suggested_format(inputs[0])
        if format is factories.contiguous_format:
            laid_out = out if out.flags.c_contiguous else np.ascontiguousarray(out)
        elif factories.is_laid_out_in(out, format):
            laid_out = factories.known_layout(out, factories.layout_order(out, format))
        else:
            laid_out = factories.laid_out_copy(out, format)
    if laid_out is not out:
        _resave_output(ctx, out, laid_out)
    return laid_out


def _iterator_result(out, inputs, rule="elementwise", number_operands=(0, 1, 2)):
    """An elementwise op's result (rule: Function.torch_layout) laid out from its inputs' torch strides
    (factories.iterator_result), or None where NumPy's is torch's already (every input a tensor of C order,
    as NumPy's result) or minilora does not know an input's strides."""
    factories = sys.modules[__package__ + ".factories"]
    base = out.base
    if any(isinstance(x, Tensor) and (out is x._array or base is not None and (
            base is x._array or base is x._array.base)) for x in inputs):
        return None  # (a view of an input)
    if _unknown_layouts_made and any(isinstance(x, Tensor) and x._layout_unknown() for x in inputs):
        return None  # (_torch_layout marks the result unknown too)
    for x in inputs:
        if isinstance(x, Tensor) and (x._base is not None or not x._array.flags.c_contiguous
                                      or factories.known_strides(x._array) is not None
                                      or factories.shared_strides_kept(x) is not None):
            break
    else:
        if out.size:  # (an empty result's strides are torch's own: iterator_strides)
            return None
    return factories.iterator_result(out, inputs, rule, number_operands)


# ---- hooks on saved tensors (torch.autograd.graph.saved_tensors_hooks; the API is in autograd.py) ----
# Ops save raw arrays on their node (``ctx.a = a``); the one place they all pass is Function.apply, right
# after forward. With hooks on (this thread's ``_mode.saved_hooks``), every saved array that is an input's
# or the output's -- what torch's node saves as a SavedVariable -- is handed to the innermost pack hook as
# a tensor and replaced on the node by what pack returned; backward calls unpack and puts the arrays back
# for the op's backward only (``retain_graph``: unpacked again next time, as torch's). minilora's own
# intermediates (masks, normalised inputs) stay arrays. As in torch, a packed tensor is not version-checked.
_saved_hooks_used = False  # has saved_tensors_hooks been entered in any thread? (the hot path's check)
_forward_ad = None  # while a torch.autograd.forward_ad level is open: minilora/forward_ad.py's hooks
_batching = None  # while torch.func.vmap runs a function: which tensors are batched (minilora/func.py's _Batching)


class _Packed:
    """One saved tensor as a hook packed it: ``value`` (pack's result), the ``unpack`` hook, the tensor
    it stood for (``source``: an input, or _RESULT), and where the node kept its array (``slot``:
    (name, index in a tuple or None); None for a tensor torch saves and minilora's op does not read)."""

    __slots__ = ("value", "unpack", "source", "slot", "shape", "device", "transposed")

    def unpacked(self):
        t = self.unpack(self.value)
        if not isinstance(t, Tensor):
            raise TypeError(f"Output of saved tensor unpack_hook expected to be a Tensor but got result of type "
                            f"{type(t).__name__}")
        return t


class _hooks_paused:
    """No saved-tensor hooks while a pack hook runs (its own ops are not packed, as torch's), or inside
    an op minilora builds from several (only the node torch has packs)."""

    def __enter__(self):
        self.hooks, _mode.saved_hooks = _mode.saved_hooks, ()

    def __exit__(self, *exc):
        _mode.saved_hooks = self.hooks


def _pack(ctx, tensor, source, slot, shape, transposed=False, hooks=None):
    pack, unpack = hooks or _mode.saved_hooks[-1]
    entry = _Packed()
    if transposed:  # (torch's linear saves ``weight.t()``: the hooks see that; unpacking turns it back)
        tensor = Tensor._make(tensor._array.T, ctx.device, False, None)
    with _hooks_paused():
        entry.value = pack(tensor)
    entry.unpack, entry.source, entry.slot, entry.shape, entry.device = unpack, source, slot, shape, ctx.device
    entry.transposed = transposed
    if ctx.packed is None:
        ctx.packed = []
    ctx.packed.append(entry)
    return entry


class _RawSaved:
    """torch's SavedTensor, ``y.grad_fn._raw_saved_self`` (autograd mechanics' hooks for one saved tensor):
    ``register_hooks(pack_hook, unpack_hook)`` packs that tensor now, and the node unpacks it where it reads it
    (its backward, ``_saved_self``), as a ``saved_tensors_hooks`` pair around the op would have."""

    def __init__(self, node, source, as_saved):
        self._node, self._source, self._as_saved = node, source, as_saved

    def register_hooks(self, pack_hook, unpack_hook):
        if not (callable(pack_hook) and callable(unpack_hook)):
            raise TypeError("register_hooks(): incompatible function arguments. The following argument types are "
                            "supported:\n    1. (self: torch._C._autograd.SavedTensor, arg0: "
                            "collections.abc.Callable, arg1: collections.abc.Callable) -> None")
        node = self._node
        if node.freed:
            raise RuntimeError("Calling register_hooks on a saved tensor after it has been freed. Saved intermediate "
                               "values of the graph are freed when you call .backward() or autograd.grad(). Specify "
                               "retain_graph=True if you need to backward through the graph a second time or if you "
                               "need to access saved variables after calling backward.")
        if any(p.source is self._source for p in node.packed or ()):
            raise RuntimeError("Calling register_hooks on a saved tensor whose hooks have already been set. Hint: "
                               "only one pair of hooks is allowed at a time.")
        global _saved_hooks_used
        _saved_hooks_used = True  # (backward unpacks a node's packed tensors only once some hook was used)
        tensor = self._as_saved().detach()  # (torch's hook gets the saved data: a tensor that requires no grad)
        out = node._output_array()
        slot = next((slot for slot, array, source in _saved_slots(node, node.inputs, out) if source is self._source
                     and array.shape == tensor.shape), None)  # (the first array kept of it: torch saves it once)
        entry = _pack(node, tensor, self._source, slot, tensor._array.shape, hooks=(pack_hook, unpack_hook))
        if slot is not None:
            _set_slot(node.__dict__, slot, entry)


def _saved_source(array, inputs, out):
    """The tensor torch's node would save for a saved array: the input (or _RESULT for the output)
    whose storage it is, else None (an intermediate of minilora's own)."""
    storage = _storage(array)
    if array is out or storage is _storage(out):
        return _RESULT
    for x in inputs:
        if isinstance(x, Tensor) and (array is x._array or storage is _storage(x._array)):
            return x
    return None


def _as_saved_tensor(ctx, array, source, result):
    """The tensor pack receives: the input or the output itself (as torch's); for a view of an input
    the op saved (Linear's rows of a 3-D input), that view."""
    if source is _RESULT:
        return result
    if array is source._array:
        return source
    return Tensor._make(array, ctx.device, False, None)


def _pack_saved(ctx, inputs, result):
    """Hand each saved input or output of a new node to the pack hook (see _Packed); for an op that
    says what torch's node saves (``Function.torch_saves``), exactly those, in its order (an entry
    ``("t", i)``: input ``i`` transposed, as torch's linear saves ``weight.t()``)."""
    slots = list(_saved_slots(ctx, inputs, result._array))
    wanted = ctx.fn.torch_saves(ctx) if ctx.fn.torch_saves is not None else None
    if wanted is None:
        for slot, array, source in slots:
            if source is not None:
                _pack_into(ctx, slot, _as_saved_tensor(ctx, array, source, result), source, array)
        return
    for want in wanted:
        transposed = isinstance(want, tuple)
        if transposed:
            want = want[1]
        found = next((entry for entry in slots if (entry[0][0] == want if isinstance(want, str)
                                                    else entry[2] is inputs[want])), None)
        if found is not None:
            slots.remove(found)  # (a tensor torch saves twice packs twice: the second for unpack only)
            slot, array, source = found
            if source is None:  # an intermediate that torch saves too
                source = Tensor._make(array, ctx.device, False, None)
            _pack_into(ctx, slot, _as_saved_tensor(ctx, array, source, result), source, array, transposed)
        elif not isinstance(want, str):
            _pack(ctx, inputs[want], inputs[want], None, inputs[want]._array.shape, transposed)


def _saved_slots(ctx, inputs, out):
    """(slot, array, source) for each array the node saved: slot is (name, index in a tuple or None),
    source the input or _RESULT it is (a view of), else None."""
    for name, value in ctx.__dict__.items():
        if isinstance(value, (tuple, list)):
            for i, array in enumerate(value):
                if hasattr(array, "base") and hasattr(array, "shape"):
                    yield (name, i), array, _saved_source(array, inputs, out)
        elif hasattr(value, "base") and hasattr(value, "shape"):
            yield (name, None), value, _saved_source(value, inputs, out)


def _pack_into(ctx, slot, tensor, source, array, transposed=False):
    """Pack ``tensor`` and keep the packed value in the node's slot instead of ``array``."""
    entry = _pack(ctx, tensor, source, slot, array.shape, transposed)
    _set_slot(ctx.__dict__, slot, entry)


def _set_slot(saved, slot, value):
    name, i = slot
    if i is None:
        saved[name] = value
    else:
        items = list(saved[name])
        items[i] = value
        saved[name] = type(saved[name])(items)


def _pack_torch_saved(ctx, result):
    """saves_as_torch named what torch's node saves: pack those the op's own arrays did not (their
    unpack runs at backward, as torch's; the op computes from its own arrays)."""
    done = [p.source for p in ctx.packed or ()]
    for entry in ctx.torch_saved:
        source = entry[0]
        if not any(source is d for d in done):
            tensor = result if source is _RESULT else source
            _pack(ctx, tensor, source, None, tensor._array.shape)


def _unpack_saved(ctx):
    """Put back the arrays the node's backward reads, each from its unpack hook."""
    saved = ctx.__dict__
    for entry in ctx.packed:
        t = entry.unpacked()
        if entry.slot is None:
            continue
        array = t._array.T if entry.transposed else t._array
        if array.shape != entry.shape:
            if array.size != math.prod(entry.shape):  # (torch fails in the backward formula's arithmetic)
                raise RuntimeError(f"unpack_hook returned a tensor of shape {list(array.shape)} for a tensor "
                                   f"of shape {list(entry.shape)} that {ctx.name()} saved for backward")
            array = array.reshape(entry.shape)  # the op kept a reshaped view (Linear's rows of a 3-D input)
        _set_slot(saved, entry.slot, array)


def _repack(ctx):
    """The packed values back in their slots (retain_graph: the next backward unpacks again)."""
    for entry in ctx.packed:
        if entry.slot is not None:
            _set_slot(ctx.__dict__, entry.slot, entry)


def _refuse_saved_inference_tensors(ctx, inputs):
    """torch refuses an inference tensor that an op saves for backward (``x * w``; ``x + w`` saves none)."""
    saved = []
    for value in ctx.__dict__.values():
        saved.extend(value if isinstance(value, (tuple, list)) else (value,))
    for x in inputs:
        if isinstance(x, Tensor) and getattr(x, "_inference", False) and any(v is x._array for v in saved):
            raise RuntimeError("Inference tensors cannot be saved for backward. Please do not use Tensors created "
                               "in inference mode in computation tracked by autograd. To work around this, you can "
                               "make a clone to get a normal tensor and use it in autograd, or use "
                               "`torch.no_grad()` instead of `torch.inference_mode()`.")


def _without_leading_ones(shape):
    """``shape`` without its leading 1s (torch's slicePrefix1sSize: what ``x[i] = value`` writes)."""
    shape = tuple(shape)
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


def torch_broadcast_message(shapes):
    """torch's error for operands that do not broadcast (TensorIterator's infer_size, operand after operand): the
    last dimension, numbered in the broadcast shape, where neither size is 1 and they differ; None if they fit."""
    shape = ()
    for other in shapes:
        ndim = max(len(shape), len(other))
        result = []
        for i in range(ndim - 1, -1, -1):
            offset = ndim - 1 - i
            n = shape[-1 - offset] if offset < len(shape) else 1
            m = other[-1 - offset] if offset < len(other) else 1
            if n != m and n != 1 and m != 1:
                return (f"The size of tensor a ({n}) must match the size of tensor b ({m}) at non-singleton "
                        f"dimension {i}")
            result.append(m if n == 1 else n)
        shape = tuple(reversed(result))
    return None


def with_note(exc, note):
    """``exc`` (in torch's words, which users and tests compare) with minilora's hint as a PEP 678 note: Python
    shows it under the message in a traceback; ``str(exc)`` stays torch's. (Before Python 3.11: the bare error.)"""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    return exc


def torch_expand_message(shape, sizes):
    """torch's error for ``expand(sizes)`` of a tensor of ``shape`` (ATen's infer_expand_geometry: the last
    dimension, numbered in ``sizes``, whose size is neither 1 nor the target); None if it expands. The words of
    every op that expands an operand to a shape (broadcast_to, expand_as, addmm's input, linear's bias, x[i] = v)."""
    for i in range(len(sizes) - 1, -1, -1):
        dim = i - (len(sizes) - len(shape))
        size = shape[dim] if dim >= 0 else 1
        target = size if sizes[i] == -1 else sizes[i]
        if size != target and size != 1:
            return (f"The expanded size of the tensor ({target}) must match the existing size ({size}) at "
                    f"non-singleton dimension {i}.  Target sizes: {list(sizes)}.  Tensor sizes: {list(shape)}")
    return None


def torch_cat_message(shapes, dim):
    """torch's error for tensors that ``cat`` cannot join along ``dim`` (check_cat_shape_except_dim: against the
    first tensor, each in turn); None if they fit."""
    first = shapes[0]
    for number, shape in enumerate(shapes[1:], 1):
        if len(shape) != len(first):
            return f"Tensors must have same number of dimensions: got {len(first)} and {len(shape)}"
        for d, (expected, got) in enumerate(zip(first, shape)):
            if d != dim and expected != got:
                return (f"Sizes of tensors must match except in dimension {dim}. Expected size {expected} but got "
                        f"size {got} for tensor number {number} in the list.")
    return None


def _is_broadcast_error(exc):
    """Is this NumPy's ValueError for shapes that do not broadcast? (torch's is a RuntimeError.)"""
    message = str(exc)  # (ufuncs say "could not be broadcast", np.broadcast_shapes "cannot be broadcast")
    return type(exc) is ValueError and ("could not be broadcast" in message or "cannot be broadcast" in message)


def _forward(cls, fn, ctx, arrays, options):
    """``fn.forward`` on the arrays, timed when the profiler is on (Function.apply's slower paths)."""
    if profiler.active is None:
        return fn.forward(ctx, *arrays, **options)
    start = time.perf_counter()
    out = fn.forward(ctx, *arrays, **options)
    profiler.active.record(cls.__name__, "forward", time.perf_counter() - start, cls.flops(ctx, arrays, out))
    return out


def _dispatched(cls, dev, arrays):
    """The class whose forward runs ``cls`` on ``dev``: on meta its shape rule's (ops/meta.py's variant: shapes, not
    values), on emu/cuda its .cu kernels where it has them (_on_kernels)."""
    if dev is _META:
        return _meta_ops.variant(cls)
    return _on_kernels(cls, arrays) if cls.kernel_forward is not None else cls


def _on_kernels(cls, arrays):
    """``cls`` with its kernel_forward / kernel_backward as forward / backward when minilora.kernels
    takes these arrays' dtype, else ``cls`` itself (its NumPy math runs on the device's arrays).

    The kernel variant is a subclass made once per op, of the same name: the backward engine calls
    ``ctx.fn.backward`` and the profiler reads ``ctx.fn.__name__``, whichever path ran."""
    from . import kernels
    if cls.kernel_supports is not None:  # an op whose kernels take more than float32 (LoRA's bf16 base)
        supported = cls.kernel_supports(*arrays)
    else:
        supported = kernels.supports(*(a.dtype for a in arrays if hasattr(a, "dtype")))
    if not supported:
        return cls
    variant = cls.__dict__.get("_kernel_variant")
    if variant is None:
        variant = type(cls.__name__, (cls,), {"forward": staticmethod(cls.kernel_forward),
                                              "backward": staticmethod(cls.kernel_backward),
                                              "__qualname__": cls.__qualname__, "__module__": cls.__module__})
        cls._kernel_variant = variant
    return variant


def _writable_alias(array):
    """A writable array showing ``array``'s memory (NumPy's broadcast views are read-only), or None
    where the storage itself is read-only."""
    from .ops import shape
    storage = shape._flat_storage(array)
    if not shape.writeable(storage):
        return None
    return shape._strided(storage, *shape._geometry(array))


def _put_through_expanded(array, index, value):
    """``x[index] = value`` into an expand()ed tensor, as torch: written where the indexed region shows
    each element once (``x[0]`` of rows that repeat one row), and by advanced indexing (which torch
    warns is deprecated); False (torch's error) where the region itself repeats an element."""
    from .ops import shape
    alias = _writable_alias(array)
    if alias is None:
        return False
    parts = index if isinstance(index, tuple) else (index,)
    if all(isinstance(i, (int, np.integer, slice, type(None), type(Ellipsis))) for i in parts):
        region = alias[index]
        if hasattr(region, "strides") and shape._overlaps(region):  # (one element: a scalar)
            return False
    else:
        warnings.warn("Use of index_put_ on expanded tensors is deprecated. Please clone() the tensor before "
                      "performing this operation. This also applies to advanced indexing e.g. tensor[indices] = "
                      "tensor", UserWarning, stacklevel=3)
    shape.put_indexed(alias, index, value)
    return True


def _storage(array):
    """The array that owns ``array``'s memory (NumPy and CuPy point a view's ``base`` at it)."""
    base = getattr(array, "base", None)
    if base is None:
        return array
    return _storage(base.base) if _is_strided_wrapper(base) else base


def _is_strided_wrapper(base):
    """Is this NumPy as_strided's wrapper (DummyArray), whose ``base`` is the array it viewed?"""
    return not hasattr(base, "strides") and hasattr(base, "__array_interface__")


def _share_storage(result, inputs, fn, options):
    """If an op returned (a view of) an input's array, the result is a view of that input: it shares
    the input's version counter and remembers its base, as torch's views do, and how it was made
    (``_view``), so that an in-place change through it can be differentiated (``_inplace``)."""
    out = result._array
    base = out.base
    if base is not None and _is_strided_wrapper(base):  # as_strided's view (unfold, expand): its source
        base = _storage(base.base)
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor):
            a = x._array
            if a is out or (base is not None and (a is base or a.base is base or _storage(a) is base)):
                result._counter = counter = x._version_counter()
                result._base = x if x._base is None else x._base
                result._view = (fn, inputs, options, i, counter[0], _inherited_creation(x, _creation_now()))
                result._inference = x._inference  # (a view of a normal tensor, made in inference_mode: normal)
                return


# torch's refusal of a write into an expand()ed tensor (its elements share memory: which value would win?)
_OVERLAPPING_WRITE = ("unsupported operation: more than one element of the written-to tensor refers to a single "
                      "memory location. Please clone() the tensor before performing the operation.")


# How a view was made -- torch's CreationMeta, the last entry of a view's ``_view`` -- decides what it may do
# later. DEFAULT (grad mode): anything, an in-place change through it is differentiated into its base (CopySlices).
# NO_GRAD_MODE / INFERENCE_MODE: it requires grad when its base does, but has no node and no .grad of its own (the
# gradient it gets goes nowhere), and changing it or its base in place and then using it in grad mode is refused
# (which of "the view's own values" or "a change of the base" autograd should follow is ambiguous). MULTI_OUTPUT_NODE
# (split, chunk, unbind in grad mode): its node serves all the pieces, so none may be changed in place.
# IN_CUSTOM_FUNCTION (a view a user's autograd.Function returned): its node is the Function's, whose backward an
# in-place change through it would bypass.
_DEFAULT, _NO_GRAD_MODE, _INFERENCE_MODE, _MULTI_OUTPUT_NODE = "default", "no_grad", "inference_mode", "multi_output"
_IN_CUSTOM_FUNCTION = "custom_function"
_CUSTOM_FUNCTION_VIEW = ("This view was created inside a custom Function (or because an input was returned as-is) and "
                         "the autograd logic to handle view+inplace would override the custom backward associated with "
                         "the custom Function, leading to incorrect gradients. This behavior is forbidden. You can fix "
                         "this by cloning the output of the custom Function.")


def _creation_now():
    """The creation tag of a view made now (torch's: inference_mode first, then grad mode)."""
    if _mode.inference:
        return _INFERENCE_MODE
    return _DEFAULT if _mode.grad_enabled else _NO_GRAD_MODE


def _inherited_creation(parent, tag):
    """A view of a view keeps its parent's tag unless its own is stricter (torch's propagate_creation_meta: a
    view of a no_grad view made in grad mode is still a no_grad view; inference_mode's tag wins over all)."""
    before = view_creation(parent)
    if tag is _DEFAULT or before is _INFERENCE_MODE:
        return before
    return tag


def returned_by_custom_function(recorded, out):
    """``recorded`` (what a user's Function gives for its output ``out``) is a view when ``out`` is one (of an
    input, made in its forward), tagged so: changing it in place, or its base, would bypass the Function's
    backward (torch's IN_CUSTOM_FUNCTION)."""
    if out._base is not None and out._view is not None:
        recorded._base = out._base
        recorded._view = out._view[:5] + (_IN_CUSTOM_FUNCTION,)


def view_creation(t):
    """``t``'s creation tag (``_DEFAULT`` for a tensor that is no view)."""
    return _DEFAULT if t._view is None else t._view[5]


def mark_multi_output_views(pieces):
    """Tag views that one call returned several of (split, chunk, unbind), made in grad mode: their node is
    shared, so none of them may be changed in place, nor used after its base was (torch's MULTI_OUTPUT_NODE)."""
    if _mode.grad_enabled and not _mode.inference:
        for piece in pieces:
            view = piece._view
            if view is not None and view[5] is not _INFERENCE_MODE:
                piece._view = view[:5] + (_MULTI_OUTPUT_NODE,)
    return pieces


def _kept_shared_strides(t):
    """Whether ``t`` holds strides share_strides gave it (only dimensions of size 1 or 0 make them matter)."""
    if all(n > 1 for n in t._array.shape):
        return False
    from .factories import shared_strides_kept
    return shared_strides_kept(t) is not None


def _share_view_strides(t, view):
    """``t`` (``detach()`` or ``.data`` of ``view``, no view of it for autograd) keeps ``view``'s strides,
    as torch's detach does (factories.share_strides): a dimension of size 1 (or 0) has its view op's, and
    ``x.t().detach()`` is no view that stride() could follow to a base."""
    from .factories import share_strides, strides_answer
    share_strides(t, strides_answer(view.stride))


def _refresh_view(view):
    """Give ``view`` a node computed from its base as the base is now (torch regenerates a view's
    grad_fn the same way after its base changed in place). A view whose tag is not DEFAULT gets none:
    where autograd would need one (it or its base requires grad) that is torch's error."""
    fn, inputs, options, i, _, creation = view._view
    if creation is not _DEFAULT:
        if view._ctx is not None or view._base._requires_grad:
            raise RuntimeError(_rebase_message(view, indirect=True))
        view._view = (fn, inputs, options, i, view._counter[0], creation)
        return
    parent = inputs[i]
    if parent._view is not None and parent._view[4] != parent._counter[0]:
        _refresh_view(parent)
    retained = view.retains_grad  # (torch's retain_grad() outlives the view's regenerated grad_fn)
    with set_grad_enabled(True):
        fresh = fn.apply(*inputs, **options)
    view._ctx, view._requires_grad = fresh._ctx, fresh._requires_grad
    if view._ctx is not None:
        view._ctx.watch_output(view)
        if view._ctx.name() not in _REGENERATED_AS_THEMSELVES:
            _rename(view._ctx, "AsStridedBackward0")  # (torch regenerates a view's node as an as_strided)
        if retained:
            view._ctx.retained = weakref.ref(view)
    view._view = (fn, inputs, options, i, view._counter[0], creation)


# the views no as_strided of the base can make (another element type): torch regenerates them by their own op
_REGENERATED_AS_THEMSELVES = frozenset({"ViewAsRealBackward0", "ViewAsComplexBackward0"})


def _rebase_message(view, indirect):
    """torch's refusal (handle_view_on_rebase) of an in-place change of ``view`` (``indirect``: of its base or
    another view of it, found when ``view`` is used next) where its creation tag forbids one."""
    creation, node = view._view[5], view._ctx
    what = "its base or another view of its base has been" if indirect else "is being"
    name = None if node is None else f"Output {node.__dict__.get('output_nr', 0)} of {_op_name(node)}"
    if creation in (_NO_GRAD_MODE, _INFERENCE_MODE) or node is None:
        # (no node means it was made where nothing was recorded: torch words any such view as a no_grad one)
        made = "A view was created in" if node is None else f"{name} is a view of a view which was created in"
        if creation is _INFERENCE_MODE:
            message = f"{made} inference mode and {what} modified inplace in normal mode."
        else:
            message = f"{made} no_grad mode and {what} modified inplace with grad mode enabled."
    else:
        message = f"{name} is a view and {what} modified inplace."
    if creation is _IN_CUSTOM_FUNCTION:
        return f"{message} {_CUSTOM_FUNCTION_VIEW}"
    if creation is _MULTI_OUTPUT_NODE:
        return message + (" This view is the output of a function that returns multiple views. Such functions do "
                          "not allow the output views to be modified inplace. You should replace the inplace "
                          "operation by an out-of-place one.")
    block = "inference_mode block" if creation is _INFERENCE_MODE else "no_grad block"
    return message + (" Given that this use case is ambiguous and error-prone, it is forbidden. You can clarify your "
                      "code by moving both the view and the inplace either both inside the " + block + " (if you "
                      "don't want the inplace to be tracked) or both outside (if you want the inplace to be "
                      "tracked).")


def _op_name(node):
    """The op a node is the backward of, as torch's messages name it: SplitBackward0 -> Split, TBackward0 -> T."""
    name = node.name().rsplit("::", 1)[-1]
    return re.sub(r"Backward\d*$", "", name)


def _resave_output(ctx, old, new):
    """A node that saved its own result (exp's, sigmoid's, relu's) holds ``new`` instead, the storage
    an in-place op wrote that result into: changing that tensor in place again before backward is then
    torch's version error (torch's exp_ saves its result too), not a silent use of a stale copy."""
    for name, value in list(vars(ctx).items()):
        if value is old:
            setattr(ctx, name, new)


def _check_versions(ctx):
    """torch's saved-tensor check, at backward: an input (or the output) whose storage changed in
    place since the op ran is an error if the op saved that storage for backward. Backward calls it
    only for nodes made before the last in-place change anywhere (``_last_change``: a node made after
    it has nothing to check). The versions are compared first; only a changed one is looked up among
    the saved arrays -- or among what the call said torch saves (``saves_as_torch``)."""
    if ctx.packed is not None:  # saved through hooks: torch checks no version either
        return
    if ctx.torch_saved is not None:
        return _check_torch_saved(ctx)
    then = ctx.versions or (0,) * len(ctx.inputs)
    changed = [(x._version, v, f"input {i}", x._array) for i, (x, v) in enumerate(zip(ctx.inputs, then))
               if isinstance(x, Tensor) and x._version != v]
    if ctx.out_watch is not None:
        counter, version, storage = ctx.out_watch
        if counter[0] != version:
            changed.append((counter[0], version, "output 0", storage))
    for counter, version, storage, output_nr in ctx.__dict__.get("sibling_watch", ()):
        if counter[0] != version:  # (another output of the call torch records as one node: share_node)
            changed.append((counter[0], version, (output_nr, storage), storage))
    if not changed:
        return
    saved = {id(_storage(a)) for a in _saved_arrays(ctx.__dict__.values())}
    for now, then, role, array in changed:
        if (array if isinstance(array, int) else id(_storage(array))) in saved:
            _raise_saved_changed(ctx, role, now, then)


def _check_torch_saved(ctx):
    """_check_versions for a node whose call said what torch saves: those tensors' versions now."""
    for entry in ctx.torch_saved:
        if entry[0] is _RESULT:
            if ctx.out_watch is not None and ctx.out_watch[0][0] != ctx.out_watch[1]:
                _raise_saved_changed(ctx, "output 0", ctx.out_watch[0][0], ctx.out_watch[1])
        elif entry[0]._version != entry[1]:
            role = next((f"input {i}" for i, x in enumerate(ctx.inputs) if x is entry[0]), entry[0])
            _raise_saved_changed(ctx, role, entry[0]._version, entry[1])


def _raise_saved_changed(ctx, role, now, then):
    """torch's error, word for word: the saved tensor's type and sizes, the node that made it (this node, for its
    own output; an input's current one, which an in-place op replaced: after ``c.add_(1)`` it is Add's), then the
    hint torch gives in or out of anomaly mode."""
    if role == "output 0":
        array, node = _saved_output_array(ctx), ctx
    elif isinstance(role, tuple):  # another output of the same torch node: (its output_nr, its storage's id)
        output_nr, storage = role
        array = next(a for a in _saved_arrays(ctx.__dict__.values()) if id(_storage(a)) == storage)
        which = f", which is output {output_nr} of {_forward_name(ctx)},"
        return _raise_version_error(array, which, now, then)
    else:
        saved = ctx.inputs[int(role.split()[1])] if isinstance(role, str) else role  # ("input i", or the tensor)
        array, node = saved._array, saved._own_node()
    which = "" if node is None else f", which is output {node.__dict__.get('output_nr', 0)} of {_forward_name(node)},"
    _raise_version_error(array, which, now, then)


def _raise_version_error(array, which, now, then):
    hint = ("the backtrace further above shows the operation that failed to compute its gradient. The variable in "
            "question was changed in there or anywhere later. Good luck!") if _detect_anomaly else \
        ("enable anomaly detection to find the operation that failed to compute its gradient, with "
         "torch.autograd.set_detect_anomaly(True, check_nan=False).")
    raise RuntimeError(f"one of the variables needed for gradient computation has been modified by an inplace "
                       f"operation: [{_legacy_type(array)} [{', '.join(map(str, array.shape))}]]{which} is at "
                       f"version {now}; expected version {then} instead. Hint: {hint}")


def _saved_output_array(ctx):
    """The array a node saved of its own output: what its call said torch saves as the result, else the saved
    array whose storage is the output's (``out_watch``'s id)."""
    for entry in ctx.torch_saved or ():
        if entry[0] is _RESULT:
            return entry[1]
    storage = ctx.out_watch[2]
    return next(a for a in _saved_arrays(ctx.__dict__.values()) if id(_storage(a)) == storage)


def _forward_name(node):
    """The op's name as torch's version error gives it: its node's name without ``Backward0`` (``Sigmoid``)."""
    name = node.name()
    return name[:name.rindex("Backward")] if "Backward" in name else name


def _legacy_type(array):
    """torch's name of an array's type in its messages: the legacy class (``torch.FloatTensor``), or for a dtype
    without one, the backend's type (``CPUComplexFloatType``)."""
    name = dtypes.torch_name(array.dtype)
    return f"CPU{name}Type" if array.dtype.kind == "c" else f"torch.{name}Tensor"


def _version_of(x):
    return x._version if isinstance(x, Tensor) else 0


def _saved_arrays(values):
    for v in values:
        if hasattr(v, "base") and hasattr(v, "shape"):
            yield v
        elif isinstance(v, (tuple, list)):
            yield from (a for a in v if hasattr(a, "base") and hasattr(a, "shape"))


# ----------------------------------------------------------------------------------------------
# Tensor
# ----------------------------------------------------------------------------------------------
def _refuse_meta_numpy(force):
    """torch's words for ``numpy()`` of a meta tensor: ``force=True`` copies it to the CPU first (no data)."""
    if force:
        raise NotImplementedError(_NO_DATA)
    raise TypeError("can't convert meta device type tensor to numpy. Use Tensor.cpu() to copy the tensor to "
                    "host memory first.")


def _host(array):
    """The values of ``array`` on the CPU. A GPU array's copy is where a kernel's error surfaces (the first call
    that waits for the GPU, ``loss.item()`` mostly): torch's error there (``device_errors_as_torch``)."""
    if isinstance(array, np.ndarray):
        return array
    with device_errors_as_torch():
        return array.get()


def _check_can_require_grad(dtype, words="Only Tensors of floating point and complex dtype can require gradients"):
    """torch's rule: only floating-point (and complex) tensors can require gradients; ``words``: torch's, which differ
    by where it is checked (a factory's or a Parameter's these, ``requires_grad_()``'s its own)."""
    if not (dtype.kind in "fc" or _is_bfloat16(dtype)):
        raise RuntimeError(words)


def _host_data(data, dtype):
    """What ``tensor()`` and ``Tensor()`` build from: a torch tensor becomes a NumPy array (bfloat16
    included); data going into a 16-bit float is rounded as torch rounds it (``dtypes.cast``)."""
    if dtypes.is_torch_tensor(data):
        data = dtypes.from_torch(data)
    data = dtypes.canonical(data)  # a byte-order copy of bfloat16 becomes the registered dtype
    if dtype is not None and dtype.itemsize == 2 and dtypes.is_floating(dtype):
        data = data if hasattr(data, "dtype") else np.asarray(data)
        if data.dtype != dtype:  # (the same dtype: shared, as from_numpy and as_tensor promise)
            data = dtypes.cast(data, dtype)
    elif dtype is not None and hasattr(data, "dtype") and _is_bfloat16(data.dtype) and dtype != data.dtype:
        data = dtypes.cast(data, dtype)  # (into an integer through float32: -2.25 wraps to uint8's 254, as torch)
    return data


_pinned_tensors = weakref.WeakValueDictionary()  # {id: tensor} of the tensors pin_memory() made (is_pinned())


_UNSET = object()  # (Tensor's constructor: an argument not given)


def legacy_device(data, device=_UNSET):
    """The device of torch's legacy constructor (``Tensor(2, 3)``, ``FloatTensor([1])``): CPU tensors, whatever
    the default device is, where that is meta (torch's legacy constructors ignore a ``with device("meta")``
    block) and refusing ``device="meta"`` in torch's words; ``Tensor(t)`` shares ``t``'s storage, on its device."""
    if len(data) == 1 and isinstance(data[0], Tensor) and device in (_UNSET, None):
        return data[0]._device
    if device is _UNSET or device is None:
        dev = _get_device(None)
        return _get_device("cpu") if dev is _META else dev
    dev = _get_device(device)
    if dev is _META:
        raise RuntimeError("legacy constructor expects device type: cpu but device type: meta was passed")
    return dev


def refuse_string_flag():
    """torch's engine reads its flags (retain_graph, create_graph, allow_unused) as C ints: a string is its TypeError
    (a truthy "no" retained the graph, or recorded a second one)."""
    raise TypeError("'str' object cannot be interpreted as an integer")



def _checked_bounds(*bounds):
    """clamp's bounds for the in-place pre-check: a complex Python number is clamp's own refusal first (torch's
    "clamp is not supported for complex types"), before any cast is looked at; a Tensor beside a number is torch's
    argument parser's refusal first ("invalid combination of arguments", ops.clamp's words), so no pre-check."""
    given = [bound for bound in bounds if bound is not None]
    if any(isinstance(b, Tensor) for b in given) and not all(isinstance(b, Tensor) for b in given):
        return []
    return [None if bound.__class__ is complex else bound for bound in bounds]


def _keeps_dtype(number, dtype):
    """Whether a Python number leaves a tensor of ``dtype`` its dtype in torch's promotion (``x * 0.9`` of a float
    tensor, ``x + 1`` of an integer one): the common case, told without computing the promotion."""
    kind = number.__class__
    return kind is bool or (kind is int and dtype.kind in "iufc") or (kind is float and dtype.kind in "fc")


def shape_mismatch(grad_shape, output_shape, index=0):
    """torch's error for a backward pass seeded with a gradient of the wrong shape (``y.backward(g)``,
    ``autograd.grad(..., grad_outputs=)``), naming which output."""
    from .size import torch_spelling
    return RuntimeError(f"Mismatch in shape: grad_output[{index}] has a shape of {torch_spelling(grad_shape)} and "
                        f"output[{index}] has a shape of {torch_spelling(output_shape)}.")

class Tensor:
    __slots__ = ("_array", "_grad", "_requires_grad", "_ctx", "_device", "_counter", "_base", "_view",
                 "_inference", "__weakref__")
    # NumPy defers to Tensor's reflected operators, so ``array + tensor`` is a Tensor, as with torch.
    __array_priority__ = 1000

    def __init__(self, *data, dtype=_UNSET, device=_UNSET, requires_grad=False):
        """torch's legacy constructor: ``Tensor([1, 2])`` is float32 (the default dtype) -- unlike
        ``tensor([1, 2])``, which infers int64; ``Tensor(2, 3)`` is a 2x3 tensor (of zeros here;
        torch leaves it uninitialised); ``Tensor(t)`` shares ``t``'s storage. ``dtype=`` (which torch's
        constructor lacks) keeps the data's own type when given; without it the call is torch's, whose
        device rule is legacy_device's (a ``with device("meta")`` block does not reach it)."""
        if dtype is _UNSET:
            dtype, device = None, legacy_device(data, device)
        dev = _get_device(None if device is _UNSET else device)
        dtype = _to_dtype(dtype)
        source = None
        if len(data) == 1 and isinstance(data[0], Size):  # Tensor(x.shape): a size, as in torch
            data = tuple(data[0])
        if len(data) == 1 and not isinstance(data[0], (int, np.integer)):
            data = data[0]
            if isinstance(data, Tensor):
                source, data = data, data._array
            elif isinstance(data, (float, complex, bool)):
                raise TypeError(f"Tensor(): data must be a sequence (got {type(data).__name__}); "
                                f"use minilora.tensor({data!r}) for a 0-d tensor")
            elif dtype is None:
                dtype = dtypes.get_default_dtype()
            data = _host_data(data, dtype)
        else:  # Tensor(2, 3): sizes; Tensor(): an empty 1-d tensor
            data = np.zeros(data or (0,), dtype=dtype or dtypes.get_default_dtype())
        if dev.xp is not np:  # (bfloat16 needs CuPy >= 14)
            dev.check_dtype(dtype if dtype is not None else getattr(data, "dtype", None))
        with device_errors_as_torch():
            array = dev.xp.asarray(data, dtype=dtype)
        if requires_grad is not False:  # (the factories' too: ones(2, requires_grad="no") required grad)
            dtypes.bool_argument(None, "requires_grad", requires_grad)
            _check_can_require_grad(array.dtype)
        shares = source is not None and array is source._array
        self._array = array
        self._grad = None
        self._requires_grad = bool(requires_grad)
        self._ctx = None
        self._device = dev
        self._counter = source._version_counter() if shares else None
        self._base = (source if source._base is None else source._base) if shares else None
        self._view = None
        self._inference = _inference_tensors_made and _mode.inference

    def new(self, *data, device=None):
        """torch's legacy ``x.new(...)``: the legacy constructor in ``x``'s dtype, on ``x``'s device (a meta
        tensor's is meta): ``new(2, 3)`` of that size (zeros here; torch leaves it uninitialised), ``new([1, 2])``
        from data, ``new(t)`` sharing ``t``'s storage (of ``x``'s dtype), ``new()`` empty. ``device=`` another
        device is torch's error."""
        if device is not None and _get_device(device) is not self._device:
            raise RuntimeError(f"legacy constructor expects device type: {self._device.name} but device type: "
                               f"{_get_device(device).name} was passed")
        if len(data) == 1 and isinstance(data[0], Tensor) and data[0].dtype != self.dtype:
            raise TypeError(f"new(): expected a tensor of dtype {self.dtype} (got {data[0].dtype}), as x's own")
        if len(data) == 1 and isinstance(data[0], (float, complex, bool)):
            raise TypeError(f"new(): data must be a sequence (got {type(data[0]).__name__})")
        return Tensor(*data, dtype=self.dtype, device=self._device)

    @staticmethod
    def _make(array, dev, requires_grad, ctx):
        """Fast constructor used by ops: no conversion, no checks -- but one: a NumPy ufunc of 0-d
        arrays returns a NumPy scalar, which as storage breaks .numpy(), fill_, x[...] = v and save."""
        if isinstance(array, np.generic):
            array = np.asarray(array)
        t = object.__new__(Tensor)
        t._array = array
        t._grad = None
        t._requires_grad = requires_grad
        t._ctx = ctx
        t._device = dev
        t._counter = None  # made by _version_counter() the first time it is needed
        t._base = None
        t._view = None
        t._inference = _inference_tensors_made and _mode.inference  # made inside inference_mode(): an inference tensor, as torch's
        return t

    # --- what it is ---------------------------------------------------------------------------
    @property
    def data(self):
        """A detached Tensor sharing this tensor's storage, as torch's ``.data``: writing into it
        changes this tensor, invisibly to autograd (no version bump: torch's own escape hatch)."""
        t = Tensor._make(self._array, self._device, False, None)
        t._inference = self._inference  # (.data of a normal tensor inside inference_mode is normal, as torch's)
        if self._base is not None:
            _share_view_strides(t, self)
        return t

    @data.setter
    def data(self, value):
        if not isinstance(value, Tensor):
            raise TypeError(f"data must be a Tensor, got {type(value).__name__}")
        if self._requires_grad and not (value.dtype.kind in "fc" or _is_bfloat16(value.dtype)):
            # (else an int64 parameter would still require grad, and its gradient would be an integer)
            raise RuntimeError("data set to a tensor that requires gradients must be floating point or complex dtype")
        if (value._device.type == "meta") != (self._device.type == "meta"):  # (a meta tensor has no values to share)
            raise RuntimeError("Attempted to call `variable.set_data(tensor)`, but `variable` and `tensor` have "
                               "incompatible tensor type.")
        self._array = value._array
        self._device = value._device

    @property
    def grad(self):
        grad = self._grad
        if type(grad) is _UnseenGrad:  # from now on, user code may hold it (see _GradStore)
            grad.__class__ = Tensor
        elif grad is None and self._ctx is not None and not self.retains_grad:  # torch's warning, same words
            warnings.warn("The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its .grad "
                          "attribute won't be populated during autograd.backward(). If you indeed want the .grad "
                          "field to be populated for a non-leaf Tensor, use .retain_grad() on the non-leaf Tensor. "
                          "If you access the non-leaf Tensor by mistake, make sure you access the leaf Tensor "
                          "instead. See github.com/pytorch/pytorch/pull/30531 for more information.", UserWarning,
                          stacklevel=2)
        return grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got grad of "
                                f"type {type(value).__name__}")
            if value is self:  # (the optimizer's step would then change the gradient it reads)
                raise RuntimeError("can't assign Variable as its own grad")
            allowed = _grad_dtype_of(self)  # (its dtype, unless grad_dtype chose another or None: any)
            if allowed is not None and value.dtype != allowed:
                from .ops import _c_name  # (ops sits above tensor: imported on error)
                raise RuntimeError(f"attempting to assign a gradient with dtype '{_c_name(value.dtype)}' to a tensor "
                                   f"with grad_dtype '{dtypes.torch_name(allowed)}'. The gradient must match the "
                                   f"tensor's grad_dtype (defaults to the tensor's dtype). You can set the tensor's "
                                   f"grad_dtype attribute with a specific dtype, or None to allow any dtype. Set "
                                   f"grad_dtype with caution. Diverging the dtypes of a tensor and its gradient may "
                                   f"break downstream systems that assume they match.")
            if value.shape != self.shape:
                raise RuntimeError(f"attempting to assign a gradient of size '{list(value.shape)}' to a tensor of size "
                                   f"'{list(self.shape)}'. Please ensure that the gradient and the tensor are the same "
                                   f"size")
            if value._device is not self._device:
                raise RuntimeError(f"assigned grad has data located on a different device "
                                   f"({value._device.name}, tensor on {self._device.name})")
        self._grad = value

    def _set_requires_grad(self, value):
        """``x.requires_grad = flag``, checked as torch's setter checks it: only a bool (a string or a number
        would be kept as the flag and read as true or false by whatever op came next), only on a leaf, and
        True only on a floating-point or complex tensor."""
        if value is not True and value is not False:
            raise RuntimeError("requires_grad must be a bool")
        if self._ctx is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables." + (
                "" if value else " If you want to use a computed variable in a subgraph that doesn't require "
                "differentiation use var_no_grad = var.detach()."))
        if value and not (self.dtype.kind in "fc" or _is_bfloat16(self.dtype)):
            raise RuntimeError("Only Tensors of floating point and complex dtype can require gradients")
        if value and not _mode.inference and self.is_inference():
            raise RuntimeError(_INFERENCE_REQUIRES_GRAD)
        self._requires_grad = value

    def _refuse_deleting_requires_grad(self):
        raise RuntimeError("requires_grad must be a bool")  # (torch's answer to ``del x.requires_grad``)

    def _get_requires_grad(self):
        """torch's requires_grad: its own flag or node (``_requires_grad``), or -- for a view -- its base's (a
        view made under no_grad of a tensor that requires grad requires grad too, with no node of its own)."""
        if self._requires_grad:
            return True
        base = self._base
        return base is not None and base._requires_grad

    # A property so that assignments are checked; the engine reads and writes ``_requires_grad`` (a slot: no
    # call), which is the whole answer but for views (see Function.apply).
    requires_grad = property(_get_requires_grad, _set_requires_grad, _refuse_deleting_requires_grad,
                             "Whether autograd records this tensor's uses.")

    @property
    def shape(self):
        return _size(self._array.shape)

    @property
    def dtype(self):
        return self._array.dtype

    @property
    def device(self):
        return self._device

    @property
    def is_cuda(self):
        return self._device.type == "cuda"

    @property
    def is_meta(self):
        """On the ``meta`` device: a shape and a dtype, no values (see minilora/device.py)."""
        return self._device is _META

    @property
    def is_cpu(self):
        return self._device.type == "cpu"

    def data_ptr(self):
        """The address of the first element (0 for an empty tensor, as torch's; a meta tensor's storage starts at
        address 0, so its view's is the offset in bytes)."""
        if not self._array.size:
            return 0
        if self._device is _META:
            return self.storage_offset() * self._array.itemsize
        return int(self._array.__array_interface__["data"][0] if isinstance(self._array, np.ndarray)
                   else self._array.data.ptr)

    @property
    def ndim(self):
        return self._array.ndim

    @property
    def is_leaf(self):
        return self._own_node() is None

    def _is_view(self):
        """torch's: does this tensor share its storage with a base that autograd knows (``_base``)?"""
        return self._base is not None

    @property
    def grad_fn(self):
        node = self._own_node()
        return None if node is None else _shown_shared(_torch_typed(node))

    @property
    def output_nr(self):
        """Which output of its node this tensor is (torch's: split's second piece is 1; a leaf's 0)."""
        node = self._own_node()
        return 0 if node is None else node.__dict__.get("output_nr", 0)

    def _own_node(self):
        """The node that made this tensor (its own output's, where one node is shown for several: share_node)."""
        view = self._view
        if view is not None and view[4] != self._counter[0] and (self._requires_grad or self._base._requires_grad):
            _refresh_view(self)  # its base changed in place: torch regenerates the node when it is asked for
        return self._ctx

    @property
    def _version(self):
        """How many in-place changes this tensor's storage has seen (torch's ``_version``)."""
        return 0 if self._counter is None else self._counter[0]

    def _version_counter(self):
        """The counter this tensor shares with its views, made on first use. A node whose output this
        is starts watching it then (the output was at version 0 until now)."""
        counter = self._counter
        if counter is None:
            counter = self._counter = [0]
            ctx = self._ctx
            if ctx is not None and ctx.out_watch is None:
                ctx.out_watch = (counter, 0, id(_storage(self._array)))
        return counter

    def _bump_version(self):
        """Count one in-place change of this tensor's storage, for torch's checks at backward."""
        global _last_change
        if not _mode.inference and self.is_inference():
            raise RuntimeError(_INFERENCE_IN_PLACE)
        self._version_counter()[0] += 1
        _last_change = next(_sequence)

    @property
    def nbytes(self):
        return int(self._array.nbytes)

    @property
    def itemsize(self):
        return self._array.itemsize

    def element_size(self):
        return self._array.itemsize

    def is_floating_point(self):
        return dtypes.is_floating(self._array.dtype)

    def size(self, dim=None):
        return _size(self._array.shape) if dim is None else self._array.shape[dim]

    def numel(self):
        return int(self._array.size)

    def dim(self):
        return self._array.ndim

    def __len__(self):
        if self._array.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self._array)

    def __iter__(self):
        if self._array.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(len(self._array)))

    def __format__(self, format_spec):
        """``f"{loss:.4f}"`` formats a 0-d tensor's value, as torch does; others as ``object``."""
        if self._array.ndim == 0 and self._device is not _META:  # (a meta one has no value: torch's object format)
            return self.item().__format__(format_spec)
        return object.__format__(self, format_spec)

    def __repr__(self):
        return tensor_repr(self)  # torch's format: tensor([1.0000, 2.5000], dtype=torch.bfloat16)

    # --- leaving the graph / the device ------------------------------------------------------
    def numpy(self, *, force=False):
        """The values as a NumPy array (on ``cuda`` only with ``force=True``, below). Unlike torch, allowed on a
        tensor that requires grad (what you get is the array, detached by nature).

        A bfloat16 tensor gives an ml_dtypes bfloat16 array, where torch raises ("Got unsupported
        ScalarType BFloat16": NumPy has no bfloat16 of its own). Its elements are ml_dtypes scalars;
        ``.tolist()``, ``.item()`` and ``float(t)`` give Python floats, as torch's do. (torch cannot
        take that array: ``minilora.dtypes.to_torch(t.numpy())`` makes the torch tensor.)
        ``force=True`` (torch's spelling for "copy and detach if you must") is the explicit copy from
        a ``cuda`` tensor; without it, ``cuda`` raises torch's TypeError (a silent device-to-host copy
        is a slow step the user should see in the code). ``emu`` is not refused: torch has no such
        device, and its arrays are NumPy arrays in host memory already -- nothing would be copied."""
        if self._device is _META:
            _refuse_meta_numpy(force)
        if force or isinstance(self._array, np.ndarray):
            return _host(self._array)
        raise TypeError(f"can't convert {self._device.name}:0 device type tensor to numpy. "
                        f"Use Tensor.cpu() to copy the tensor to host memory first.")

    def __array__(self, dtype=None, copy=None):
        """``np.asarray(t)``: the array itself on the CPU, as with torch's CPU tensors."""
        if self._device is _META:
            _refuse_meta_numpy(False)
        if not isinstance(self._array, np.ndarray):
            raise TypeError(f"can't convert {self._device.name}:0 device type tensor to numpy. "
                            f"Use Tensor.cpu() to copy the tensor to host memory first.")
        array = self._array if dtype is None else self._array.astype(dtype, copy=False)
        return array.copy() if copy else array

    def __dlpack__(self, **kwargs):
        """The DLPack protocol (``torch.from_dlpack(t)``, and so ``torch.tensor(t)``, ``torch.as_tensor``,
        ``cupy.from_dlpack``): the array's own export, sharing memory, on the CPU or the GPU. As torch,
        refused for a tensor that requires grad. NumPy cannot export bfloat16 (DLPack has the type;
        NumPy's exporter does not): ``minilora.dtypes.to_torch(t.numpy())`` makes the torch tensor."""
        if self._requires_grad:
            raise BufferError("Can't export tensors that require gradient, use tensor.detach()")  # (torch's type)
        if self._device is _META:
            raise BufferError("Cannot pack tensors on meta")
        if _is_bfloat16(self._array.dtype) and isinstance(self._array, np.ndarray):
            raise BufferError("a bfloat16 CPU tensor cannot go through DLPack (NumPy's exporter has no "
                              "bfloat16): use minilora.dtypes.to_torch(t.numpy())")
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()

    def item(self):
        if _batching is not None:
            _batching.check_scalar(self, "item")
        if self._array.size != 1:
            raise RuntimeError(f"a Tensor with {self._array.size} elements cannot be converted to "
                               f"Scalar: item() needs one element, got shape {tuple(self.shape)}")
        if self._device is _META:
            raise RuntimeError("Tensor.item() cannot be called on meta tensors")
        return _host(self._array.reshape(())).item()

    def tolist(self):
        if _batching is not None:
            _batching.check_scalar(self, "tolist")
        if self._device is _META:
            raise NotImplementedError(_NO_DATA)
        return _host(self._array).tolist()  # (from any device, as torch's)

    def detach(self):
        """Same storage and version counter (as torch), no graph, no gradient. Not a view for
        autograd: changing it in place is allowed, and caught at backward if the values were saved."""
        t = Tensor._make(self._array, self._device, False, None)
        t._counter = self._version_counter()
        t._inference = self._inference  # (detach() of a normal tensor inside inference_mode is normal, as torch's)
        if self._base is not None or (self._array.ndim > 1 and _kept_shared_strides(self)):
            _share_view_strides(t, self)  # (a clone of a view keeps torch's strides too: x.t().clone().detach())
        return t

    def is_inference(self):
        """torch's: was this tensor made inside ``inference_mode()``? Such a tensor refuses
        ``requires_grad_()`` and in-place changes outside it, as torch's."""
        return getattr(self, "_inference", False)

    def detach_(self):
        if self._base is not None:  # (torch refuses any view, in any mode: it shares its base's autograd history)
            raise RuntimeError("Can't detach views in-place. Use detach() instead. If you are using "
                               "DistributedDataParallel (DDP) for training, and gradient_as_bucket_view is set as "
                               "True, gradients are views of DDP buckets, and hence detach_() cannot be called on "
                               "these gradients. To fix this error, please refer to the Optimizer.zero_grad() "
                               "function in torch/optim/optimizer.py as the solution.")
        self._ctx, self._requires_grad = None, False
        return self

    def clone(self, *, memory_format=None):
        from . import ops
        return ops.clone(self, memory_format=memory_format)

    def contiguous(self, memory_format=None):
        """``self`` when already contiguous, else a contiguous copy (as torch: an in-place op on
        ``x.t().contiguous()`` must not reach ``x``); ``memory_format=torch.channels_last``: a copy
        with the channels innermost, unless already so."""
        from . import factories, ops
        if memory_format is factories.preserve_format:
            raise RuntimeError("preserve memory format is unsupported by the contiguous operator")
        if memory_format not in (None, factories.contiguous_format):
            if factories.is_laid_out_in(self._array, memory_format) and not self._layout_unknown():
                return self
            return ops.clone(self, memory_format=memory_format)  # (which refuses another rank)
        if self._array.flags.c_contiguous and not self._layout_unknown() and not isinstance(
                factories.known_strides(self._array), str):  # (strides minilora cannot tell: a copy's are C order)
            return self
        return ops.clone(self, memory_format=factories.contiguous_format)

    def _layout_unknown(self):
        """Is this tensor (or the tensor it views) a result whose layout minilora does not know to be
        torch's (factories.unknown_layout)? Then is_contiguous() and stride() refuse, and contiguous()
        copies."""
        from .factories import layout_is_unknown
        return layout_is_unknown(self._array) or (self._base is not None and layout_is_unknown(self._base._array))

    def is_contiguous(self, *, memory_format=None):
        """Laid out in ``memory_format`` (C order by default, and for preserve_format as torch;
        ``torch.channels_last``: channels innermost), dimensions of size 1 aside."""
        from . import factories
        if self._layout_unknown():
            raise NotImplementedError(f"is_contiguous(): this tensor (shape {tuple(self._array.shape)}) was made "
                                      f"from a channels_last one by an op whose layout minilora does not follow; "
                                      f"call .contiguous() first")
        if memory_format in (None, factories.contiguous_format, factories.preserve_format):
            return bool(self._array.flags.c_contiguous)
        if self._array.size == 0:  # (NumPy's strides of an empty array are not torch's: stride() knows them)
            return factories.strides_laid_out_in(self._array.shape, self.stride(), memory_format)
        return factories.is_laid_out_in(self._array, memory_format)

    def requires_grad_(self, requires_grad=True):
        dtypes.bool_argument("requires_grad_", "requires_grad", requires_grad, position=1)
        if requires_grad:
            _check_can_require_grad(self.dtype, "only Tensors of floating point dtype can require gradients")
            if not _mode.inference and self.is_inference():
                raise RuntimeError(_INFERENCE_REQUIRES_GRAD)
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables. If you "
                               "want to use a computed variable in a subgraph that doesn't require "
                               "differentiation use var_no_grad = var.detach().")
        self._requires_grad = bool(requires_grad)
        if requires_grad and self._ctx is None and view_creation(self) is _DEFAULT:
            # a view made a leaf (x.reshape(2).requires_grad_()) stays one: torch does not rebuild its
            # node from the base after an in-place change (embedding's max_norm), which would drop the flag
            # (a no_grad view keeps its tag: changing it in place in grad mode is still refused)
            self._view = None
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward (for inspection)."""
        if self._ctx is not None:
            import weakref
            self._ctx.retained = weakref.ref(self)
        elif not self.requires_grad:  # (a leaf that requires grad, a no_grad view of one: nothing to do)
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")

    @property
    def retains_grad(self):
        return self._ctx is not None and self._ctx.retained is not None and self._ctx.retained() is self

    def to(self, *args, **kwargs):
        """``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other)`` (its device and dtype),
        with keywords ``device=``, ``dtype=``, ``copy=``, ``memory_format=``, as torch. A copy when something
        changes (or ``copy=True``), else ``self``; differentiable. A memory format other than the tensor's
        suggested one (factories.suggested_format: channels_last or contiguous) lays the copy out so."""
        from . import factories, ops
        memory_format = kwargs.pop("memory_format", None)
        device, dtype, copy = _parse_to(args, kwargs)
        out = self
        if dtype is not None and dtype != self.dtype:
            (device or self._device).check_dtype(dtype)  # (bfloat16 on cuda needs CuPy >= 14)
            out = ops.astype(out, dtype)
        if device is not None and device is not self._device:
            out = ops.to_device(out, device)
        if copy and out is self:
            out = name_node(ops.clone(self, memory_format=memory_format), "ToCopyBackward0")
        elif memory_format not in (None, factories.preserve_format) and (
                out is not self or factories.suggested_format(self._array) is not memory_format):
            out = out.contiguous(memory_format=memory_format)  # (torch aliases self in its suggested format)
        return out

    def float(self, memory_format=None):  # (torch's default, preserve_format, is None's meaning in to())
        return self.to(dtypes.float32, memory_format=memory_format)

    def double(self, memory_format=None):
        return self.to(dtypes.float64, memory_format=memory_format)

    def half(self, memory_format=None):
        return self.to(dtypes.float16, memory_format=memory_format)

    def long(self, memory_format=None):
        return self.to(dtypes.int64, memory_format=memory_format)

    def int(self, memory_format=None):
        return self.to(dtypes.int32, memory_format=memory_format)

    def bool(self, memory_format=None):
        return self.to(dtypes.bool, memory_format=memory_format)

    def bfloat16(self, memory_format=None):  # (a clear error without ml_dtypes: NumPy alone has no bfloat16)
        return self.to(dtypes.bfloat16, memory_format=memory_format)

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else device)

    def pin_memory(self, device=None):
        """torch's copy into page-locked host memory, for faster copies to a GPU. Without a GPU torch
        refuses, and so does minilora; with CuPy's, a copy that ``is_pinned()`` (NumPy's memory is not
        page-locked: copies to the GPU are the same, at pageable memory's speed)."""
        if not any(d.name == "cuda" and d.enabled() for d in _all_devices()):
            raise RuntimeError("Cannot access accelerator device when none is available.")
        if self.device.type != "cpu":
            raise RuntimeError(f"cannot pin '{self.device.type}' tensor: only dense CPU tensors can be pinned")
        pinned = self.clone()
        _pinned_tensors[id(pinned)] = pinned
        return pinned

    def is_pinned(self, device=None):
        """Whether ``pin_memory()`` made this tensor (False for every other: torch's answer without a GPU)."""
        if device is not None:
            _get_device(device)  # (a device it cannot name is torch's error too)
        return _pinned_tensors.get(id(self)) is self

    def type_as(self, other):
        return self.to(other.dtype)

    # --- in-place ops (torch's rules: see _check_inplace and _inplace) -----------------------
    def copy_(self, src, non_blocking=False):
        if isinstance(src, (numbers.Number, np.generic)):  # (a number fills, as torch's)
            src = Tensor._make(self._device.xp.asarray(src), self._device, False, None)
        elif not isinstance(src, Tensor):  # (torch's parser: a None, a string or a list was written in as an array)
            raise TypeError(f"copy_(): argument 'other' (position 1) must be Tensor, not {type(src).__name__}")
        if src._device is not self._device:
            src = src.to(self._device)
        return self._inplace(_copy_from, src, cast=True)

    def zero_(self):
        return self._fill_inplace(0, node="ZeroBackward0")

    def fill_(self, value):
        if isinstance(value, Tensor):
            if value.ndim != 0:
                raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor "
                                   f"with {value.ndim} dimensions.")
            if _batching is not None:
                _batching.check_inplace(self, "fill", (value,))
            if value._requires_grad and _mode.grad_enabled:
                return self._inplace(_copy_from, value, cast=True)
            value = value.to(self._device)._array  # a 0-d tensor is copied (so it wraps around)
            return self._fill_inplace(dtypes.cast(value, self.dtype))
        value = dtypes.checked_number(dtypes.python_number(value), self.dtype)  # (a number: uint8 refuses 300)
        return self._fill_inplace(value)

    def _fill_inplace(self, value, node="FillBackward2"):
        """``node``: torch's name for the fill's node (fill_ of a number: FillBackward2)."""
        if self._array.itemsize == 2 and not hasattr(value, "dtype"):  # a Python number into a 16-bit
            value = dtypes.cast(np.asarray(value), self.dtype)  # float: rounded as torch (dtypes.cast)
        if _mode.grad_enabled and self._requires_grad:  # a non-leaf in the graph: its gradient stops here
            return self._inplace(_replace_values, Tensor._make(
                self._device.xp.asarray(value, dtype=self.dtype), self._device, False, None), node=node)
        self._check_inplace()
        if self._device is _META:  # (no values to write: its pages stay unwritten, so unbacked)
            self._bump_version()
            return self
        try:
            self._array[...] = value
        except ValueError as exc:  # (NumPy's bare words, said as _write says them for an expand())
            if "read-only" not in str(exc):
                raise
            alias = None if getattr(value, "ndim", 0) else _writable_alias(self._array)
            if alias is not None:  # an expand()ed tensor (NumPy's broadcast views are read-only): torch's
                # fill_ and zero_ write their one value through it (random fills and other ops refuse)
                alias[...] = value
                self._bump_version()
                return self
            raise RuntimeError(_OVERLAPPING_WRITE) from None
        self._bump_version()
        return self

    def add_(self, other, *, alpha=1):
        from . import ops
        self._check_elementwise_inplace(other)
        return self._inplace(ops.add, other, alpha=alpha)

    def sub_(self, other, *, alpha=1):
        from . import ops
        self._check_elementwise_inplace(other)
        return self._inplace(ops.sub, other, alpha=alpha)

    def mul_(self, other):
        from . import ops
        self._check_elementwise_inplace(other)
        return self._inplace(ops.mul, other)

    def div_(self, other, *, rounding_mode=None):
        from . import ops
        self._check_elementwise_inplace(other)
        return self._inplace(ops.div, other, rounding_mode=rounding_mode)

    def pow_(self, exponent):
        from . import ops
        self._check_elementwise_inplace(exponent)
        return self._inplace(ops.pow, exponent)

    def neg_(self):
        from . import ops
        return self._inplace(ops.neg)

    def masked_fill_(self, mask, value):
        from . import ops
        return self._inplace(ops.masked_fill, mask, value)

    def clamp_(self, min=None, max=None):
        from . import ops
        self._check_elementwise_inplace(*_checked_bounds(min, max))
        return self._inplace(ops.clamp, min, max)

    clip_ = clamp_

    # normal_, uniform_ and torch's other random fills (exponential_, random_, bernoulli_, ...) are
    # set on Tensor by factories.py, next to the random factories they share their checks with.

    def __setitem__(self, index, value):
        """``x[index] = value``: torch's ``index_put_``, differentiable inside the graph."""
        from . import ops
        if index is False:  # torch's THPVariable_setitem: nothing at all (no write, no node, no version)
            return
        index = ops.shape.sequence_as_tuple(index)
        if isinstance(value, (list, tuple, np.ndarray)):  # torch takes a tensor or a number only
            name = "numpy.ndarray" if isinstance(value, np.ndarray) else type(value).__name__
            raise TypeError(f"can't assign a {name} to a torch.{dtypes.torch_name(self.dtype)}Tensor "
                            f"(wrap it in minilora.tensor() first)")
        if isinstance(value, np.generic):
            value = _assignable_numpy_scalar(value, self.dtype)
        if _mode.grad_enabled and view_creation(self) is not _DEFAULT:
            self._check_tagged_setitem(index, value)
        given = value  # (torch's graph shows the value as given: see ops.shape.setitem_node)
        if type(value) in (int, float, bool, complex):  # a number is stored: it must fit (uint8: 300 raises)
            value = dtypes.checked_number(_as_int64(value), self.dtype, check_16bit_floats=False)
        if isinstance(value, Tensor) and value.ndim and value.shape[0] == 1:  # torch drops a value's
            value = value.reshape(_without_leading_ones(value.shape))  # leading 1s: x[0] = t([5]) fits
        if isinstance(value, Tensor) and value.dtype != self.dtype:  # cast, or torch's index_put_ error
            value = ops.shape.setitem_value(index, value, self.dtype)
        if _mode.grad_enabled and (self._requires_grad or (isinstance(value, Tensor) and value._requires_grad)) or \
                _forward_ad is not None and _forward_ad.writes_dual(self, (value,)):
            self._inplace(ops.index_put, index, value)
            if self._base is None and self._ctx is not None:  # (through a view: _inplace_view's CopySlices)
                self._name_setitem_node(index, given)
            return
        if _batching is not None:
            _batching.check_inplace(self, "index_put", (value,))
        self._check_inplace()  # outside the graph: write just the indexed elements (a KV cache...)
        if isinstance(value, Tensor):
            if value._device is not self._device:
                raise RuntimeError(f"__setitem__: value on {value._device.name}, tensor on "
                                   f"{self._device.name}; move one with .to()")
            value = value._array
        elif self._array.itemsize == 2 and not hasattr(value, "dtype"):  # numbers into a 16-bit float:
            value = dtypes.cast(np.asarray(value), self.dtype)  # rounded as torch (through float32)
        try:
            raw = ops.shape._raw_index(index, self._device)
            ops.shape.put_indexed(self._array, raw, value)
        except IndexError as exc:  # (NumPy's words for x[0] = 1 on a 0-d x: torch's)
            raise ops.shape.torch_index_error(exc, self, index) from None
        except TypeError as exc:  # ml_dtypes' words for more values than places (a bfloat16 target)
            if "expected number" not in str(exc):
                raise
            raise ShapeError(f"__setitem__: a value of shape {tuple(np.shape(value))} does not fit "
                             f"x[{index!r}]") from None
        except ValueError as exc:
            if "broadcast" in str(exc) or "with a sequence" in str(exc):  # torch: RuntimeError (ShapeError
                raise ShapeError(_setitem_message(self._array, raw, value) or f"__setitem__: {exc}") from None
            if "read-only" not in str(exc):
                raise
            if not _put_through_expanded(self._array, raw, value):
                raise RuntimeError(_OVERLAPPING_WRITE) from None
        self._bump_version()

    def _check_tagged_setitem(self, index, value):
        """torch writes ``view[i] = value`` of a basic index into the view ``view[i]`` (a view of a view, with its
        own node where ``view`` requires grad), so a tagged view's refusal names that one (see _rebase_message)."""
        part = self[index]
        (part if part._base is not None else self)._check_inplace(value)

    def _name_setitem_node(self, index, value):
        """The node ``self[index] = value`` gave this tensor, named and linked as torch's (CopySlices where
        torch writes through a view of it; ops.shape.setitem_node)."""
        from . import ops
        ctx = self._ctx
        target = ops.shape.take_indexed(np.broadcast_to(np.zeros((), np.uint8), self.shape),
                                        ops.shape._without_empty_ellipsis(ctx.index, self.ndim)).shape
        name, value_edge = ops.shape.setitem_node(index, self.shape, value, target)
        name_node(self, name, graph=None if value_edge is None else (ctx.inputs[0], value_edge))

    def __iadd__(self, other): return self.add_(other)
    def __isub__(self, other): return self.sub_(other)
    def __imul__(self, other): return self.mul_(other)
    def __itruediv__(self, other): return self.div_(other)
    def __ipow__(self, other): return self.pow_(other)

    def _check_inplace(self, *others):
        """torch's check_inplace, where the change would be recorded (grad mode, and ``self`` or one of ``others``
        requires grad): a view whose creation tag is not DEFAULT refuses (see _DEFAULT), then a view of a leaf that
        requires grad, then such a leaf itself (it may change in place only under ``no_grad()``)."""
        if not _mode.grad_enabled or not (self.requires_grad or any(
                isinstance(x, Tensor) and x._requires_grad for x in others)):
            return
        base = self._base
        if base is not None:
            if view_creation(self) is not _DEFAULT:
                raise RuntimeError(_rebase_message(self, indirect=False))
            if self.requires_grad and base._ctx is None:
                raise RuntimeError("a view of a leaf Variable that requires grad is being used in an "
                                   "in-place operation.")
        if self._requires_grad and self._ctx is None:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place "
                               "operation.")
        if self._ctx is not None and self._ctx.fn.refuses_inplace is not None:
            raise RuntimeError(f"{self._ctx.fn.refuses_inplace(self._ctx)} is a view and is being modified inplace. "
                               f"{_CUSTOM_FUNCTION_VIEW}")

    def _check_promoted_fits(self, *others, to_float=False):
        """torch's check before an in-place binary op runs: the promoted dtype of ``self`` and ``others``
        must be castable to ``self``'s (``int_tensor &= 2.5`` is this RuntimeError, not the kernel's
        NotImplementedError for floats). ``to_float``: an op that computes integers in the default float dtype."""
        try:
            promoted = dtypes.result_type(self, *others)
        except NotImplementedError:  # float16 with a complex number: torch's ComplexHalf, which no real self holds
            raise RuntimeError(f"result type ComplexHalf can't be cast to the desired output type "
                               f"{dtypes.torch_name(self.dtype)}") from None
        if to_float and promoted.kind in "biu":
            promoted = dtypes.get_default_dtype()
        if not dtypes.can_cast(promoted, self.dtype):
            raise RuntimeError(f"result type {dtypes.torch_name(promoted)} can't be cast to the "
                               f"desired output type {dtypes.torch_name(self.dtype)}")

    def _check_elementwise_inplace(self, *operands, to_float=False, promoted=True):
        """torch's checks before an in-place elementwise op's kernel looks at the dtypes, in its order (TensorIterator
        builds the output first): the operands broadcast to ``self``'s shape (``zero_d &= tensor`` is "output with
        shape [] doesn't match the broadcast shape [16]", whatever the dtypes), then (``promoted``) the promoted dtype
        fits ``self`` (``bool_tensor.clamp_min_(complex)``: "result type ComplexFloat can't be cast to ... Bool", not
        clamp's NotImplementedError). Operands of self's shape and dtype (an optimizer's ``add_``) pass at once."""
        array, plain = self._array, True
        for operand in operands:
            if isinstance(operand, Tensor):
                if operand._array.shape != array.shape:
                    self._check_broadcast_fits(operand)
                plain = plain and operand._array.dtype == array.dtype
            elif operand is not None:
                plain = plain and _keeps_dtype(operand, array.dtype)
        if promoted and not plain:
            self._check_promoted_fits(*(o for o in operands if o is not None), to_float=to_float)

    def _check_broadcast_fits(self, operand):
        """torch's refusal of an in-place op whose operand would broadcast ``self`` to a larger shape (operands that do
        not broadcast at all are left to the op's own words)."""
        try:
            shape = np.broadcast_shapes(self._array.shape, operand._array.shape)
        except ValueError:
            return
        if shape != self._array.shape:
            mine, shape = list(self.shape), list(shape)
            if _batching is not None:  # (inside vmap: torch's batched tensors' shapes, the batch sizes in front)
                mine, shape = _batching.physical_shape([self], mine), _batching.physical_shape([self, operand], shape)
            raise RuntimeError(f"output with shape {mine} doesn't match the broadcast shape {shape}")

    def _inplace(self, op, *args, cast=False, **kwargs):
        """Run ``op(self, *args)`` and write the result into ``self``'s storage.

        Outside the graph this is just a write. Inside it (``self`` or an argument requires grad),
        ``self`` takes over the new node; the op saw a *copy* of the old values (as torch's in-place
        formulas see ``original_self``), so writing the result cannot corrupt what it saved.
        """
        if _forward_ad is not None and _forward_ad.writes_dual(self, args):
            return _forward_ad.dual_inplace(self, op, args, kwargs, cast)
        if _batching is not None:
            _batching.check_inplace(self, op.__name__, args)
        self._check_inplace(*args)
        graph = _mode.grad_enabled and (self._requires_grad or any(
            isinstance(a, Tensor) and a._requires_grad for a in args))
        if self._base is not None and _self_overlapping(self._array):
            if not graph:
                return self._inplace_overlapping(op, args, kwargs, cast)
            if self._overlap_changes_values(op, args, kwargs, cast):  # (a fill_, copy_ of a constant: not)
                raise NotImplementedError("minilora cannot differentiate an in-place op that reads the old "
                                          "values through a view that shows some elements more than once "
                                          "(unfold with step < size, as_strided); change a clone() instead")
        if not graph:
            with no_grad():
                result = op(self, *args, **kwargs)
            self._write(result._array, cast)
            return self
        if self._base is not None:
            return self._inplace_view(op, args, kwargs, cast)
        before = _snapshot(self)
        result = _still_in_graph(op(before, *args, **kwargs), before)
        if cast and result.dtype != self.dtype:
            from . import ops
            result = ops.astype(result, self.dtype)
        self._write(result._array, cast)
        retained = self.retains_grad
        self._ctx, self._requires_grad = result._ctx, result._requires_grad
        if retained:
            _move_retain_grad(self, before._ctx)
        if self._ctx is not None:  # the new node's output is now this tensor's storage
            self._ctx.watch_output(self)
            _resave_output(self._ctx, result._array, self._array)
        return self

    def _inplace_overlapping(self, op, args, kwargs, cast):
        """An in-place op on a view that shows some elements more than once, as torch's kernels run
        it: element by element in the view's order, each reading what the earlier ones wrote, so an
        element shown k times is changed k times (``x.unfold(0, 3, 1).add_(1)`` adds up to 3). Round r
        computes the op on the values the earlier rounds left and writes each element's r-th
        appearance."""
        from .ops import shape
        view = self._array
        storage = shape._flat_storage(view)
        positions = (_element_addresses(view) - _data_address(storage)) // view.itemsize
        appearance = _appearance_numbers(positions.reshape(-1))
        scratch = Tensor._make(view.copy(), self._device, False, None)  # (_write's checks and casts)
        for r in range(int(appearance.max()) + 1):
            with no_grad():
                result = op(self, *args, **kwargs)
            scratch._write(result._array, cast)
            now = appearance == r
            storage[positions.reshape(-1)[now]] = scratch._array.reshape(-1)[now]
        self._bump_version()
        return self

    def _overlap_changes_values(self, op, args, kwargs, cast):
        """Would torch's element-by-element order (``_inplace_overlapping``) leave other values than
        one application of ``op`` to the view's old values, which the graph can differentiate? Both are
        run on copies of the storage."""
        from .ops import shape
        geometry, results = shape._geometry(self._array), []
        values = [a.detach() if isinstance(a, Tensor) else a for a in args]
        for in_order in (True, False):
            storage = shape._flat_storage(self._array).copy()
            view = Tensor._make(shape._strided(storage, *geometry), self._device, False, None)
            with no_grad():
                if in_order:
                    view._inplace_overlapping(op, values, kwargs, cast)
                else:
                    view._write(op(view.clone(), *values, **kwargs)._array, cast)
            results.append(storage)
        return not bool(self._device.xp.array_equal(results[0], results[1], equal_nan=True))

    def _inplace_view(self, op, args, kwargs, cast):
        """An in-place op on a view of a tensor in the graph, as torch's CopySlices: the *base* gets a
        new node -- its old values with the view's region replaced by ``op(view)`` -- and the view is
        then re-derived from it. Indexing, reshape, permute and a repeat-free expand write back directly
        (``_write_back``), other views (diagonal, unfold, as_strided) by element position."""
        from . import ops
        chain, view = [], self  # the view ops from the base down to self
        while view._base is not None:
            if view._view is None:
                raise NotImplementedError("minilora cannot differentiate an in-place change of this "
                                          "view; change a clone() or the base tensor instead")
            chain.append(view._view)
            view = view._view[1][view._view[3]]
        base = self._base
        before = _snapshot(base)
        levels = [before]  # the old base, then each view of it down to self's region
        for fn, inputs, options, i, *_ in reversed(chain):
            levels.append(fn.apply(*inputs[:i], levels[-1], *inputs[i + 1:], **options))
        new = result = op(levels[-1], *args, **kwargs)
        if cast and new.dtype != self.dtype:
            new = ops.astype(new, self.dtype)
        for (fn, inputs, options, i, *_), parent in zip(chain, reversed(levels[:-1])):
            new = _write_back(fn, inputs, options, i, parent, new)
        new = _still_in_graph(new, before)
        base._write(new._array, cast)
        retained = base.retains_grad
        base._ctx, base._requires_grad = new._ctx, new._requires_grad
        if retained:
            _move_retain_grad(base, before._ctx)
        if base._ctx is not None:
            base._ctx.watch_output(base)
            _rename(base._ctx, "torch::autograd::CopySlices")  # (torch's node for a write through a view)
            # its edges as torch's: the base's old node, then the op's edges but its first (the view's)
            others = result._ctx.next_functions[1:] if result._ctx is not None else ()
            base._ctx.torch_graph = (before, *(node for node, _ in others))
        _refresh_view(self)
        if result._ctx is not None:  # the op's result now lives in self's region of the base
            result._ctx.watch_output(self)
            _resave_output(result._ctx, result._array, self._array)
        return self

    def _write(self, values, cast):
        """Store ``values`` into this tensor's storage; torch's shape and dtype rules for in-place."""
        if not cast and values.dtype != self.dtype and not dtypes.can_cast(values.dtype, self.dtype):
            raise RuntimeError(f"result type {dtypes.torch_name(values.dtype)} can't be cast to the "
                               f"desired output type {dtypes.torch_name(self.dtype)}")
        if values.shape != self.shape:
            if np.broadcast_shapes(values.shape, self.shape) != self.shape:
                raise RuntimeError(f"output with shape {list(self.shape)} doesn't match the "
                                   f"broadcast shape {list(np.broadcast_shapes(values.shape, self.shape))}")
        if values is self._array or self._device is _META:  # (meta: no values to write)
            return
        if values.dtype != self.dtype and self._array.itemsize == 2:  # float64 into bfloat16: rounded
            values = dtypes.cast(values, self.dtype)  # through float32, as torch's in-place ops write
        try:
            self._array[...] = values
        except ValueError as exc:
            if "read-only" not in str(exc):
                raise
            raise RuntimeError(_OVERLAPPING_WRITE) from None
        self._bump_version()

    # --- autograd ------------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (only into the ``inputs``' when given).

        A scalar needs no ``gradient``; any other tensor needs one of its own shape (the vector in
        the vector-Jacobian product). The graph is freed afterwards unless ``retain_graph=True``.
        """
        # (a Ctrl-C lands after the pass, as in torch's C++ engine: every .grad, or none; CuPy's out-of-memory
        # error is torch's)
        with held_ctrl_c(), device_errors_as_torch():
            return self._backward(gradient, retain_graph, create_graph, inputs)

    def _backward(self, gradient, retain_graph, create_graph, inputs):
        if create_graph.__class__ is str or retain_graph.__class__ is str:
            refuse_string_flag()
        if create_graph:  # a recorded pass of its own (minilora/ops/higher_order.py): this one stays lean
            from .ops import higher_order
            return higher_order.backward(self, gradient, retain_graph, inputs)
        if not self._requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a "
                               "grad_fn")
        xp = self._device.xp
        if gradient is None:
            if self._array.size != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs (this "
                                   f"tensor has shape {tuple(self.shape)}); pass gradient=")
            gradient = xp.ones_like(self._array)
        else:
            if isinstance(gradient, (int, float, complex, list, tuple, np.generic)):  # torch takes Tensors
                raise TypeError(f"gradients can be either Tensors or None, but got "  # (x.backward(2.0)
                                f"{type(gradient).__name__}")  # would scale silently: torch refuses it)
            gradient = gradient._array if isinstance(gradient, Tensor) else xp.asarray(gradient)
            if gradient.shape != self.shape:
                raise shape_mismatch(gradient.shape, self.shape)
            gradient = dtypes.cast(gradient, self.dtype) if gradient.dtype != self.dtype else gradient
        store = None if inputs is None else _InputsGradStore(gradient, inputs)  # .grad of those only
        watched = _grads_before()  # leaves with post-accumulate-grad hooks (DistributedDataParallel)
        # (parallel.computing: BLAS on one thread while minilora computes, minilora/parallel.py)
        if store is None and not _mode.inputs_chosen:  # (the usual pass: no second context, ~1 us a call)
            with parallel.computing():
                _run_backward(self, gradient, bool(retain_graph), store)
        else:
            with parallel.computing(), backward_over_inputs(store is not None):
                _run_backward(self, gradient, bool(retain_graph), store)
        _run_post_accumulate_grad_hooks(watched)

    def register_hook(self, hook):
        """torch's: ``hook(grad)`` runs when the gradient with respect to this tensor is computed, and
        may return a replacement (a Tensor) or None. On a leaf it runs before ``.grad`` accumulates,
        once per backward, on the gradient summed over every use. Returns a handle; ``handle.remove()``
        takes the hook out."""
        if not self.requires_grad:  # (a no_grad view of a tensor that requires grad takes one: it never runs)
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self._ctx is not None:
            if self._ctx.hooks is None:
                self._ctx.hooks = {}
            if self._ctx.retained is None:  # backward looks for hooks only where this is set
                self._ctx.retained = _no_tensor
            hooks = self._ctx.hooks
        else:
            entry = _leaf_hooks.get(id(self))
            if entry is None or entry[0]() is not self:  # (none yet, or a dead tensor's id reused)
                entry = _leaf_hooks[id(self)] = (weakref.ref(self), {})
            hooks = entry[1]
        handle = _HookHandle(hooks)
        hooks[handle.id] = hook
        return handle

    def register_post_accumulate_grad_hook(self, hook):
        """torch's: ``hook(tensor)`` runs after a backward pass has accumulated this leaf's ``.grad``
        (once per backward, when the pass is done). ``DistributedDataParallel`` all-reduces with it.
        Returns a handle; ``handle.remove()`` takes the hook out."""
        if not self._requires_grad:  # (torch's first check, as register_hook's)
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self._ctx is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        entry = _post_accumulate_grad_hooks.setdefault(id(self), (weakref.ref(self), {}))
        if entry[0]() is not self:  # a dead tensor's id was reused
            entry = _post_accumulate_grad_hooks[id(self)] = (weakref.ref(self), {})
        handle = _HookHandle(entry[1])
        entry[1][handle.id] = hook
        return handle

    # --- more of torch's Tensor API: names and conversions ----------------------------------------
    def nelement(self):
        return int(self._array.size)

    def ndimension(self):
        return self._array.ndim

    def is_signed(self):
        return self._array.dtype.kind in "ifc" or _is_bfloat16(self._array.dtype)

    def byte(self, memory_format=None):
        return self.to(dtypes.uint8, memory_format=memory_format)

    def char(self, memory_format=None):
        return self.to(dtypes.int8, memory_format=memory_format)

    def short(self, memory_format=None):
        return self.to(dtypes.int16, memory_format=memory_format)

    @property
    def H(self):
        """The conjugate transpose of a matrix: its transpose (minilora has no complex dtypes)."""
        if self._array.ndim == 0:  # (torch: the tensor itself, with a deprecation warning)
            return self
        if self._array.ndim != 2:
            raise RuntimeError(f"tensor.H is only supported on matrices (2-D tensors). Got "
                               f"{self._array.ndim}-D tensor.")
        return self.transpose(0, 1)

    @property
    def mH(self):
        """The conjugate transpose of a batch of matrices: ``mT`` (no complex dtypes here)."""
        return self.mT

    def swapdims(self, dim0, dim1):
        return self.transpose(dim0, dim1)

    def moveaxis(self, source, destination):
        return self.movedim(source, destination)

    def mode(self, dim=-1, keepdim=False):
        from .ops.index import mode
        return mode(self, dim, keepdim)

    def mv(self, vec):
        from .ops.matmul import mv
        return mv(self, vec)

    # In-place versions of the pointwise functions: ``x.exp_()`` is ``x`` with ``exp(x)`` written into
    # it (torch's rules: see _inplace; inside the graph the tensor takes the op's node).
    def _unary_(self, name, *args):
        from . import ops
        return self._inplace(getattr(ops, name), *args)

    def _promoting_(self, name, other, to_float=False):
        """An in-place binary op of the promoted dtype (``to_float``: integers promoted to the default float
        dtype, as atan2's): torch refuses a result self cannot hold before its kernel looks at the dtype
        (bool.hypot_(uint8): "result type Byte can't be cast to the desired output type Bool", not hypot's
        NotImplementedError for Byte)."""
        self._check_elementwise_inplace(other, to_float=to_float)
        return self._unary_(name, other)

    def _comparing_(self, name, other):
        """An in-place comparison or logical op: its bool result is written in ``self``'s dtype (no promotion to
        fit), but ``other`` must still broadcast to ``self``'s shape."""
        self._check_elementwise_inplace(other, promoted=False)
        return self._unary_(name, other)

    def exp_(self): return self._unary_("exp")
    def log_(self): return self._unary_("log")
    def sqrt_(self): return self._unary_("sqrt")
    def rsqrt_(self): return self._unary_("rsqrt")
    def abs_(self):
        if self._array.dtype.kind == "c":  # (|z| is real: it cannot be written back into z's dtype)
            raise RuntimeError("In-place abs is not supported for complex tensors.")
        return self._unary_("abs")
    def relu_(self): return self._unary_("relu")
    def sigmoid_(self): return self._unary_("sigmoid")
    def tanh_(self): return self._unary_("tanh")
    def floor_(self): return self._unary_("floor")
    def ceil_(self): return self._unary_("ceil")
    def trunc_(self): return self._unary_("trunc")
    def sin_(self): return self._unary_("sin")
    def cos_(self): return self._unary_("cos")
    def reciprocal_(self): return self._unary_("reciprocal")
    def square_(self): return self._unary_("square")
    def sign_(self): return self._unary_("sign")
    def log1p_(self): return self._unary_("log1p")
    def expm1_(self): return self._unary_("expm1")
    def clamp_min_(self, min):  # noqa: A002  (torch's names)
        self._check_elementwise_inplace(*_checked_bounds(min))
        return self._unary_("clamp_min", min)
    def clamp_max_(self, max):  # noqa: A002
        self._check_elementwise_inplace(*_checked_bounds(max))
        return self._unary_("clamp_max", max)

    # (more of torch's in-place forms, each the op written into self)
    def acos_(self): return self._unary_("acos")
    def acosh_(self): return self._unary_("acosh")
    def asin_(self): return self._unary_("asin")
    def asinh_(self): return self._unary_("asinh")
    def atan_(self): return self._unary_("atan")
    def atanh_(self): return self._unary_("atanh")
    def cosh_(self): return self._unary_("cosh")
    def sinh_(self): return self._unary_("sinh")
    def tan_(self): return self._unary_("tan")
    def erf_(self): return self._unary_("erf")
    def exp2_(self): return self._unary_("exp2")
    def log10_(self): return self._unary_("log10")
    def log2_(self): return self._unary_("log2")
    def sgn_(self): return self._unary_("sgn")  # (z / |z| for a complex z; sign for a real one)
    def negative_(self): return self._unary_("neg")
    def bitwise_not_(self): return self._unary_("bitwise_not")
    def logical_not_(self): return self._unary_("logical_not")
    def fmod_(self, other): return self._promoting_("fmod", other)
    def atan2_(self, other): return self._promoting_("atan2", other, to_float=True)
    def xlogy_(self, other): return self._promoting_("xlogy", other, to_float=True)
    def copysign_(self, other): return self._promoting_("copysign", other, to_float=True)
    def hypot_(self, other): return self._promoting_("hypot", other)
    def logical_and_(self, other): return self._comparing_("logical_and", other)
    def logical_or_(self, other): return self._comparing_("logical_or", other)
    def logical_xor_(self, other): return self._comparing_("logical_xor", other)
    def eq_(self, other): return self._comparing_("eq", other)
    def ne_(self, other): return self._comparing_("ne", other)
    def lt_(self, other): return self._comparing_("lt", other)
    def le_(self, other): return self._comparing_("le", other)
    def gt_(self, other): return self._comparing_("gt", other)
    def ge_(self, other): return self._comparing_("ge", other)
    def tril_(self, diagonal=0): return self._unary_("tril", diagonal)
    def triu_(self, diagonal=0): return self._unary_("triu", diagonal)
    arctan2_ = atan2_
    subtract_, multiply_ = sub_, mul_  # (torch's other names, as subtract / multiply)

    def round_(self, *, decimals=None):
        from . import ops
        return self._inplace(ops.round, decimals=decimals)

    # --- operators --------------------------------------------------------------------------------
    # +, -, *, /, **, @, unary -, indexing and methods such as x.sum() are the op wrappers themselves,
    # attached to Tensor at the end of minilora/ops/__init__.py (next to the ops they call).

    # Comparisons give boolean tensors outside the graph (no gradient through a comparison). Operands of
    # two dtypes are compared in torch's promoted dtype, not NumPy's: a bfloat16 tensor == a float32
    # 0-d tensor holding 2.3 rounds the 2.3 to bfloat16 first (NumPy would widen the tensor instead).
    def _compare(self, other, op):
        if other is None or isinstance(other, str):  # torch: t == None is False, t < None TypeError
            return NotImplemented
        a = self._array
        b = other._array if isinstance(other, Tensor) else dtypes.python_number(other)
        meta_shape = None
        if self._device is _META:  # shapes, not values: the comparison runs on one element of each (ops/meta.py)
            meta_shape, a, b = _meta_ops.small_operands(a, b)
        b_dtype = getattr(b, "dtype", None)
        if b_dtype is not None and b_dtype != a.dtype:
            common = dtypes.result_type(a, b)
            a = a if a.dtype == common else dtypes.cast(a, common)
            b = b if b_dtype == common else dtypes.cast(b, common)
        elif type(b) is float and a.dtype.kind in "biu":  # an integer tensor against a float: in the
            a = dtypes.cast(a, dtypes.get_default_dtype())  # default float dtype, as torch (not float64)
        elif type(b) is int and a.dtype.kind in "iu":  # an int is wrapped around into the tensor's
            b = dtypes.wrap_int(b, a.dtype)  # dtype, as torch does: uint8 < -1 compares with 255
        elif type(b) is int:
            dtypes.result_type(a, b)  # (torch's errors for ints past int64: OverflowError, promotion)
        try:
            out = op(a, b)
        except ValueError as exc:
            if not _is_broadcast_error(exc):
                raise
            raise ShapeError(f"{op.__name__}: {exc}") from None
        # (a ufunc of 0-d arrays returns a NumPy scalar: as a tensor's array it broke .numpy(), fill_, save)
        out = self._device.xp.asarray(out)
        if meta_shape is not None:
            out = _meta_ops.elementwise_result(meta_shape, out.dtype, (self._array, getattr(other, "_array", other)))
        if out.ndim and (_layouts_remembered or self._base is not None
                             or isinstance(other, Tensor) and other._base is not None):
            laid_out = _iterator_result(out, (self, other))  # (a TensorIterator's result, as add's)
            out = out if laid_out is None else laid_out
        result = Tensor._make(out, self._device, False, None)
        return result if _batching is None else _batching.follow(result, (self, other))  # (not an op: vmap's note)

    def __lt__(self, other): return self._ordered(other, np.less, "lt")
    def __le__(self, other): return self._ordered(other, np.less_equal, "le")
    def __gt__(self, other): return self._ordered(other, np.greater, "gt")
    def __ge__(self, other): return self._ordered(other, np.greater_equal, "ge")

    def _ordered(self, other, op, name):
        """<, <=, >, >=: torch has no order for complex numbers (NumPy's would be lexicographic)."""
        if self._array.dtype.kind == "c" or type(other) is complex or \
                isinstance(other, Tensor) and other._array.dtype.kind == "c":
            dtype = dtypes.result_type(self._array, other._array if isinstance(other, Tensor) else other)
            raise NotImplementedError(f'"{name}_cpu" not implemented for \'{dtypes.torch_name(dtype)}\'')
        return self._compare(other, op)
    def __eq__(self, other): return self._compare(other, np.equal)
    def __ne__(self, other): return self._compare(other, np.not_equal)
    __hash__ = object.__hash__

    def __bool__(self):
        if _batching is not None:
            _batching.check_scalar(self, "bool")
        if self._array.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with more than one value is ambiguous")
        if self._device is _META:
            raise RuntimeError("Tensor.item() cannot be called on meta tensors")
        return bool(self._array)

    def __float__(self):
        if self._requires_grad and _mode.grad_enabled:  # (torch: not under no_grad, where LBFGS reads its loss)
            _warn_scalar_of_grad_tensor()
        return float(self._real_python_scalar("double"))

    def __complex__(self):
        return complex(self._python_scalar())

    def __contains__(self, element):
        """``x in t``: does any element of ``t`` equal ``x`` (a number or a tensor, broadcast)."""
        import numbers
        if not isinstance(element, (Tensor, numbers.Number)):
            raise RuntimeError(f"Tensor.__contains__ only supports Tensor or scalar, but you passed in a "
                               f"{type(element)}.")
        return bool((element == self).any().item())

    def __reversed__(self):
        """``reversed(t)``: ``t`` flipped along its first dimension (a 0-d tensor is itself), as torch."""
        return self if self.ndim == 0 else self.flip(0)

    def __delitem__(self, index):
        raise TypeError("Tensor does not support deleting items")

    def __int__(self):
        return int(self._real_python_scalar("int64_t"))

    def _real_python_scalar(self, c_type):
        """The element for ``int(t)``/``float(t)``: a complex one only with no imaginary part (torch's check)."""
        value = self._python_scalar()
        if isinstance(value, complex):
            if value.imag != 0:
                raise RuntimeError(f"value cannot be converted to type {c_type} without overflow")
            return value.real
        return value

    def _python_scalar(self):
        """``int(t)``/``float(t)``: torch raises ValueError there (``item()`` raises RuntimeError)."""
        if self._array.size != 1:
            raise ValueError("only one element tensors can be converted to Python scalars")
        return self.item()

    def __index__(self):
        if self.dtype.kind not in "iub":
            raise TypeError(f"only integer tensors of a single element can be converted to an index")
        return int(self.item())


_new_tensor = Tensor._make  # (a plain function: Function.apply calls it once per op, without a lookup on the class)

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_ARGUMENT_CHECKS_FILE = os.path.join(_PACKAGE_DIR, "_argument_types.py")


def _inside_minilora(frame):
    return os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR)


def _called_from_minilora(frame):
    """Is the call that reached ``frame``'s function made by minilora's own code? The frames of the checks
    ``_argument_types`` wraps public functions in are passed over: they are the user's call, checked."""
    caller = frame.f_back
    while caller is not None and os.path.abspath(caller.f_code.co_filename) == _ARGUMENT_CHECKS_FILE:
        caller = caller.f_back
    return caller is not None and _inside_minilora(caller)


def warn_at_caller(message, category=UserWarning):
    """``warnings.warn`` pointing at the first frame outside minilora: the user's line however many
    wrappers (decorators, modules) the call went through."""
    frame, level = sys._getframe(1), 2
    while frame is not None and _inside_minilora(frame):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


_warned_scalar_of_grad_tensor = False


def _warn_scalar_of_grad_tensor():
    """torch's warning (once per process, its TORCH_WARN_ONCE) when ``float(t)`` or ``'%.4f' % loss`` reads
    a tensor that requires grad while grad mode is on: the number leaves the graph. ``item()``, ``int()`` and
    f-strings do not warn."""
    global _warned_scalar_of_grad_tensor
    if not _warned_scalar_of_grad_tensor:
        _warned_scalar_of_grad_tensor = True
        warnings.warn("Converting a tensor with requires_grad=True to a scalar may lead to unexpected behavior.\n"
                      "Consider using tensor.detach() first.", UserWarning, stacklevel=3)


def _copy_from(dest, src):
    """``dest.copy_(src)`` as an op: the result is ``src`` broadcast to ``dest``'s shape (and dtype);
    the gradient goes to ``src`` only (``dest``'s old values are gone)."""
    from . import ops
    try:
        out = ops.expand(src, *dest.shape) if src.shape != dest.shape else src
    except ShapeError:  # (expand's words are not copy_'s: torch's, worked out only on the way out)
        _check_copy_shapes(dest.shape, src.shape)
        raise
    out = ops.astype(out, dest.dtype) if out.dtype != dest.dtype else out
    out = out if out is not src else ops.clone(src)
    return name_node(out, "torch::autograd::CopyBackwards", src, graph=(dest, src))  # (torch's node: both edges)


def _setitem_message(array, raw, value):
    """torch's words for ``x[index] = value`` where value does not broadcast to the place: copy_'s expand for a
    slice, index_put's for an index of tensors or a mask."""
    place = np.shape(array[raw])  # (an error path: an advanced index's copy costs nothing that matters)
    if any(hasattr(p, "shape") or isinstance(p, list) for p in (raw if isinstance(raw, tuple) else (raw,))):
        return (f"shape mismatch: value tensor of shape {list(np.shape(value))} cannot be broadcast to indexing "
                f"result of shape {list(place)}")
    return torch_expand_message(np.shape(value), place)


def _check_copy_shapes(dest, src):
    """torch's copy_ errors (TensorIterator's): shapes that do not broadcast, or that broadcast past ``dest``."""
    message = torch_broadcast_message([tuple(dest), tuple(src)])
    if message is not None:
        raise ShapeError(message)
    ndim = max(len(dest), len(src))
    padded_dest, padded_src = (1,) * (ndim - len(dest)) + tuple(dest), (1,) * (ndim - len(src)) + tuple(src)
    shape = [n if m == 1 else m for n, m in zip(padded_dest, padded_src)]
    if tuple(shape) != tuple(dest):
        raise ShapeError(f"output with shape {list(dest)} doesn't match the broadcast shape {shape}")


def _snapshot(t):
    """A copy of ``t``'s values that stands for ``t`` before an in-place op: same node, its own
    storage (and so its own version counter, which its node must not mistake for its output's)."""
    before = Tensor._make(t._array.copy(), t._device, t._requires_grad, t._ctx)
    before._counter = [0]
    return before


def _still_in_graph(result, before):
    """An in-place result that does not depend on the old values (``copy_`` of a constant, ``fill_``
    through a view of all of it) still has a node when the tensor had one, as torch's CopyBackwards /
    CopySlices: its gradient to the old values is zero."""
    if result._requires_grad or not before._requires_grad:
        return result
    return _replace_values(before, result, "torch::autograd::CopyBackwards")


def _write_back(fn, inputs, options, i, parent, child):
    """``parent`` with the region that view op ``fn`` selected replaced by ``child`` (differentiable)."""
    from . import ops
    name = fn.__name__
    if hasattr(fn, "write_back"):  # a view op that says how (x.real, view_as_real: minilora/complex_numbers.py)
        return fn.write_back(parent, child)
    if name == "GetItem":
        return ops.index_put(parent, options["index"], child)
    if name == "Reshape":
        return ops.reshape(child, parent.shape)
    if name == "Permute":
        return ops.permute(child, tuple(np.argsort([a % parent.ndim for a in options["axes"]])))
    if name == "Expand":  # one that repeats nothing (only 1s added): the parent's elements, reshaped
        if child.numel() != parent.numel():
            raise RuntimeError("unsupported operation: more than one element of the written-to tensor refers "
                               "to a single memory location. Please clone() the tensor before performing "
                               "the operation.")
        return ops.reshape(child, parent.shape)
    return _write_back_by_position(fn, inputs, options, i, parent, child)


def _write_back_by_position(fn, inputs, options, i, parent, child):
    """Any other view (diagonal, unfold, as_strided): the view op run on the parent's element
    positions says which element each of the view's shows; those are replaced by ``child``'s
    (where windows overlap, the last one written wins, as NumPy's assignment)."""
    from . import ops
    arrays = [x._array if isinstance(x, Tensor) else x for x in inputs]
    arrays[i] = parent._array
    shown = fn.forward(Context(fn, parent._device, (False,) * len(arrays)), *arrays, **options)
    picked = _element_indices(parent._array, shown)
    if shown.shape != tuple(child.shape) or picked is None:
        raise NotImplementedError(f"minilora cannot differentiate an in-place change of a view made by "
                                  f"{fn.__name__}; change a clone() or the base tensor instead")
    index = Tensor._make(picked, parent._device, False, None)
    flat = ops.index_put(ops.reshape(parent, (-1,)), (index,), ops.reshape(child, (-1,)))
    return ops.reshape(flat, parent.shape)


def _data_address(array):
    """Where ``array``'s first element lies in memory (CuPy: its device pointer)."""
    if isinstance(array, np.ndarray):  # (not .data: its memoryview refuses bfloat16)
        return array.__array_interface__["data"][0]
    return array.data.ptr


def _element_addresses(array):
    """Every element's address in memory, an integer array of ``array``'s shape."""
    xp = _xp_of(array)
    addresses = xp.full(array.shape, _data_address(array), dtype=np.int64)
    for axis, (size, stride) in enumerate(zip(array.shape, array.strides)):
        addresses += (xp.arange(size, dtype=np.int64) * stride).reshape((-1,) + (1,) * (array.ndim - axis - 1))
    return addresses


def _element_indices(array, view):
    """Each of ``view``'s elements as a flat (C order) index into ``array``, whose memory it must
    show; None when the view shows memory outside ``array``."""
    xp = _xp_of(array)
    mine = _element_addresses(array).reshape(-1)
    order = xp.argsort(mine, kind="stable")
    wanted = _element_addresses(view).reshape(-1)
    found = xp.minimum(xp.searchsorted(mine[order], wanted), max(mine.size - 1, 0))
    if mine.size == 0 or not bool(xp.all(mine[order][found] == wanted)):
        return None if wanted.size else xp.zeros(0, dtype=np.int64)
    return order[found]


def _self_overlapping(array):
    """Does ``array`` show some element of its memory more than once? Only an array NumPy's
    as_strided made (unfold, as_strided, an expand: read-only, _write refuses it) or a view of one can;
    those are looked at closely."""
    base = array.base
    if base is None or not (_is_strided_wrapper(base) or _is_strided_wrapper(getattr(base, "base", None))):
        return False
    if not array.flags.writeable or array.size < 2:
        return False
    addresses = _element_addresses(array).reshape(-1)
    return _xp_of(array).unique(addresses).size < addresses.size


def _appearance_numbers(positions):
    """For each entry of ``positions`` (in order), how many earlier entries hold the same value."""
    xp = _xp_of(positions)
    order = xp.argsort(positions, kind="stable")
    ordered = positions[order]
    run_start = xp.searchsorted(ordered, ordered)  # (where each value's run of equal ones begins)
    appearance = xp.empty_like(positions)
    appearance[order] = xp.arange(ordered.size) - run_start
    return appearance


def _replace_values(dest, values, node):
    """``dest.fill_(v)`` inside the graph: the node stays, the gradient to the old values is zero, a constant
    (torch's formula: zeros_like(grad); so a create_graph=True gradient through it does not require grad).
    ``node``: torch's name for it (FillBackward2, ZeroBackward0), whose one edge is ``dest``'s."""
    from .ops.elementwise import ZeroGradientTo
    filled = ZeroGradientTo.apply(values.expand(*dest.shape), dest)
    copies = node == "torch::autograd::CopyBackwards"  # (copy_'s second edge: its constant source's None)
    return name_node(filled, node, dest, graph=(dest, None) if copies else (dest,))


# torch's three signatures of Tensor.to, by what comes first: a Tensor, a dtype, else a device (a string too:
# x.to('float64') is torch's "Invalid device string"); non_blocking and copy follow by position or keyword
_TO_SIGNATURES = {"other": ("other", "non_blocking", "copy"), "dtype": ("dtype", "non_blocking", "copy"),
                  "device": ("device", "dtype", "non_blocking", "copy")}


def _parse_to(args, kwargs):
    """torch's ``Tensor.to`` overloads -> ``(device, dtype, copy)``; a call none of them takes is torch's
    "invalid combination of arguments"."""
    first = args[0] if args else None
    kind = ("other" if isinstance(first, Tensor) else "dtype" if dtypes.is_dtype_object(first) else "device")
    names = _TO_SIGNATURES[kind]
    given = dict(zip(names, args))
    if len(args) > len(names) or any(name in given or name not in names for name in kwargs):
        raise _to_invalid_combination(args, kwargs)
    given.update(kwargs)
    for flag in ("non_blocking", "copy"):
        if not isinstance(given.get(flag, False), bool):
            raise _to_invalid_combination(args, kwargs)
    device, dtype = given.get("device"), given.get("dtype")
    if not (device is None or isinstance(device, (str, int, Device)) or type(device).__name__ == "device"):
        raise _to_invalid_combination(args, kwargs)  # x.to([1])
    if kind == "device" and len(args) > 1 and not (args[1] is None or dtypes.is_dtype_object(args[1])):
        raise _to_invalid_combination(args, kwargs)  # x.to('cpu', 'float64'): a dtype by position is a dtype
    if kind == "other":
        device, dtype = first._device, first.dtype
    dtype = dtypes.dtype_argument("to", dtype)
    return (None if device is None else _get_device(device)), dtype, given.get("copy", False)


def _to_invalid_combination(args, kwargs):
    got = [dtypes._argument_type_name(a) if not dtypes.is_dtype_object(a) else "torch.dtype" for a in args]
    got += [f"{k}={dtypes._argument_type_name(v)}" for k, v in kwargs.items()]
    return TypeError(f"to() received an invalid combination of arguments - got ({', '.join(got)}), but expected one "
                     "of:\n * (torch.device device = None, torch.dtype dtype = None, bool non_blocking = False, "
                     "bool copy = False, *, torch.memory_format memory_format = None)\n * (torch.dtype dtype, bool "
                     "non_blocking = False, bool copy = False, *, torch.memory_format memory_format = None)\n * "
                     "(Tensor tensor, bool non_blocking = False, bool copy = False, *, torch.memory_format "
                     "memory_format = None)\n")


def tensor(data, dtype=None, device=None, requires_grad=False, *, pin_memory=False):
    """``minilora.tensor([[1., 2.]], dtype=minilora.float64, device='cpu', requires_grad=True)``.

    As torch.tensor: always a copy; the dtype is inferred from the data -- Python floats give the
    default dtype (float32), ints int64, bools bool; a NumPy array or scalar or a Tensor keeps its
    dtype, in a list too (``[np.float64(1), 2]`` is float64: see ``_inferred_dtype``)."""
    if pin_memory is not False:  # (torch's tensor() takes pin_memory=, not layout=: factories.check_layout)
        sys.modules[__package__ + ".factories"].check_layout("tensor", None, pin_memory, device)
    dev = _get_device(device)
    dtype = dtypes.dtype_argument("tensor", dtype)
    if requires_grad is not False:
        dtypes.bool_argument("tensor", "requires_grad", requires_grad)
    if isinstance(data, Tensor):
        if not _called_from_minilora(sys._getframe(0)):  # (the user's call; minilora's own copies stay quiet)
            warn_at_caller("To copy construct from a tensor, it is recommended to use sourceTensor.detach().clone() "
                           "or sourceTensor.detach().clone().requires_grad_(True), rather than "
                           "torch.tensor(sourceTensor).")
        # (without device= or a default device set, the copy stays on the tensor's device, as torch's
        # internal_new_from_data: a meta tensor's copy is meta, not a refused copy out of it to the cpu)
        stays = device is None and not sys.modules[__package__ + ".device"].default_is_set()
        return _copy_of_tensor(data, dtype, data._device if stays else dev, requires_grad)
    source = data
    if isinstance(data, np.ndarray):
        refuse_negative_strides(data)
    if isinstance(data, np.generic) and dtype is not None:
        _check_numpy_scalar(data, dtype)
    elif isinstance(data, np.ndarray) and data.dtype.kind in "OUS":
        raise TypeError(f"can't convert np.ndarray of type numpy.{data.dtype.type.__name__}. The only "
                        f"supported types are: numbers and bool")
    if not hasattr(data, "dtype"):
        data = _from_python(data, dtype)
    data = _host_data(data, dtype)  # torch tensors (bfloat16 too); rounding into 16-bit floats
    if dev.xp is np and not isinstance(data, np.ndarray) and hasattr(data, "get"):
        data = data.get()  # a CuPy array, to the CPU
    elif dev.xp is not np:  # (bfloat16 needs CuPy >= 14)
        dev.check_dtype(dtype if dtype is not None else getattr(data, "dtype", None))
    with device_errors_as_torch():
        array = dev.xp.array(data, dtype=dtype, copy=True)
    if isinstance(source, np.ndarray) and dev.xp is np and source.ndim > 1:  # (C-contiguous by NumPy's flags may
        # still have a dimension of size 1 whose stride torch keeps)
        from .factories import numpy_layout_kept
        array = numpy_layout_kept(array, source)
    if requires_grad:
        _check_can_require_grad(array.dtype)
    return Tensor._make(array, dev, bool(requires_grad), None)


def refuse_negative_strides(array):
    """torch's ValueError for a NumPy array with a negative stride (``a[::-1]``): torch.tensor, as_tensor, asarray
    and from_numpy wrap the array's memory first, and a torch tensor cannot step backwards."""
    if any(stride < 0 for stride in array.strides):
        raise ValueError("At least one stride in the given numpy array is negative, and tensors with negative "
                         "strides are not currently supported. (You can probably work around this by making a copy "
                         "of your array  with array.copy().) ")


def _copy_of_tensor(data, dtype, device, requires_grad):
    """``tensor(t)`` / ``t.new_tensor(t)``: torch's ``t.detach().to(device, dtype, copy=True)``, a preserve_format
    copy, so a transposed or channels_last tensor's copy keeps its strides (as ``clone``), not C order."""
    copy = data.detach().to(device=device, dtype=dtype, copy=True)
    if requires_grad:
        _check_can_require_grad(copy.dtype)
        copy.requires_grad_()
    return copy


def scalar_tensor(s, *, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False):
    """``torch.scalar_tensor(3)``: a 0-d tensor of the default float dtype, whatever the number
    (``tensor(3)`` would be int64)."""
    if layout is not None or pin_memory is not False:
        sys.modules[__package__ + ".factories"].check_layout("scalar_tensor", layout, pin_memory, device)
    dtype = dtypes.get_default_dtype() if dtype is None else dtypes.dtype_argument("scalar_tensor", dtype)
    if isinstance(s, complex):  # (torch stores it as a Scalar: 1j into a real dtype overflows, 1+0j is 1.0)
        s = dtypes.checked_number(s, dtype)
    return tensor(s, dtype=dtype, device=device, requires_grad=requires_grad)


def _from_python(data, dtype):
    """Python numbers -- or (nested) lists of them, NumPy scalars and tensors among them -- as the
    array torch.tensor builds: of ``dtype``, or of torch's inferred dtype. As torch, a Python int past
    int64 is refused where the dtype is not a float, and a number an integer dtype cannot hold is
    refused (RuntimeError) rather than wrapped around; -1 into uint8 is 255, as in torch."""
    inferred = _inferred_dtype(data)
    target = inferred if dtype is None else dtype
    if inferred is not None and inferred.kind == "c" and target.kind not in "cb":  # (bfloat16 is kind V)
        _refuse_python_complex(data, target)
    array = np.asarray(_storable_items(data, target))
    if inferred is not None and array.dtype.kind == "O" and dtype is not None:  # ints past uint64:
        if dtype == dtypes.bool:  # any number fits a bool (torch: nonzero is True)
            return array != 0
        if dtypes.is_floating(dtype):  # a float takes them, as torch's does
            return dtypes.cast(array.astype(np.float64), dtype)
    if inferred is None or array.dtype.kind in "OUS":  # strings, None, objects, ints past uint64
        _refuse_non_numbers(array)
    if target.kind in "iu" and inferred.kind in "biu" and array.dtype.kind in "fu" \
            and array.dtype != inferred:  # NumPy made floats or uint64 of Python ints past int64
        raise ValueError("Overflow when unpacking long long")
    if target.kind in "iu" and array.size and array.dtype.kind in "fiu":
        try:
            for extreme in (array.min(), array.max()):  # torch checks every number it stores
                dtypes.checked_number(extreme.item() if array.dtype.kind == "f" else int(extreme), target)
        except RuntimeError:  # (a list of ints and floats became floats: torch checks each number by its
            if not isinstance(data, (list, tuple)):  # own type, so [-2, 1.25] into uint8 is [254, 1]
                raise  # while [-2.0] overflows)
            for item in _numbers_in(data):
                dtypes.checked_number(item, target)
            return dtypes.cast(np.asarray(_storable_items(data, target), dtype=object).astype(np.int64), target)
    return array if array.dtype == target else dtypes.cast(array, target)


def _refuse_python_complex(data, target):
    """torch reads each Python number of ``tensor([...], dtype=)`` as the dtype's C type, through Python's
    ``__index__`` or ``float()``, which a complex number refuses (TypeError), whatever its imaginary part;
    NumPy would drop the imaginary part (``tensor(1j, dtype=int8)`` was 0). A bool dtype takes it (nonzero)."""
    items = _numbers_in(data) if isinstance(data, (list, tuple, range)) else (data,)
    if any(isinstance(item, complex) for item in items):
        raise TypeError("'complex' object cannot be interpreted as an integer" if target.kind in "iu"
                        else "must be real number, not complex")


def _numbers_in(data):
    """The numbers of a nested list, each as the Python int, float or bool it is (a tensor's as .item())."""
    for item in data:
        if isinstance(item, (list, tuple)):
            yield from _numbers_in(item)
        else:
            yield item.item() if hasattr(item, "item") else item


def _inferred_dtype(data):
    """torch.tensor's dtype for ``data`` (torch's infer_scalar_type): a Python float is the default
    dtype, an int int64, a bool bool; NumPy scalars and arrays and tensors keep their dtype; a list
    promotes its items' dtypes (``[np.float16(1), 2]`` is float16, ``[np.float16(1), 2.0]`` float32)
    and an empty one is the default dtype. None for anything else (no number: the caller refuses)."""
    if hasattr(data, "dtype"):  # Tensors, NumPy (and torch) arrays and scalars (np.float64 is a float)
        return dtypes.to_dtype(data.dtype)
    if isinstance(data, bool):
        return dtypes.bool
    if isinstance(data, int):
        return dtypes.int64
    if isinstance(data, float):
        return dtypes.get_default_dtype()
    if isinstance(data, complex):
        return np.dtype(np.complex64 if dtypes.get_default_dtype().itemsize < 8 else np.complex128)
    if not isinstance(data, (list, tuple, range)):
        return None
    if not data:
        return dtypes.get_default_dtype()
    types = set(map(type, data))
    if types <= _PYTHON_NUMBERS:  # the common case, a list of Python numbers: no walk item by item
        return dtypes.get_default_dtype() if float in types else dtypes.int64 if int in types else dtypes.bool
    found, first_is_sequence = None, _is_sequence(data[0])
    for item in data:
        _check_item(item, first_is_sequence, data[0])
        dtype = _inferred_dtype(item)
        if dtype is None:
            return None
        found = dtype if found is None else dtypes.promote_types(found, dtype)
    return found


_PYTHON_NUMBERS = {int, float, bool}


def _is_sequence(item):
    """A list's item that is a list of numbers, not a number; a tensor in a list is a number (torch)."""
    return isinstance(item, (list, tuple, range)) or (getattr(item, "ndim", 0) > 0
                                                      and not isinstance(item, Tensor))


def _storable_items(data, target):
    """``data`` with each tensor among its (nested) items replaced by the number it holds: torch reads
    a tensor in a list as a number, whatever its shape (``[tensor([1.]), 2]`` has shape (2,)), and
    refuses one of more than one element (ValueError), where NumPy would stack them. NumPy scalars
    torch cannot store as ``target`` are its TypeError (see ``_check_numpy_scalar``)."""
    if target is None or not isinstance(data, (list, tuple)) or set(map(type, data)) <= _PYTHON_NUMBERS:
        return data  # (a number, or a list of Python numbers: the common case, no walk)
    items = []
    for item in data:
        if isinstance(item, Tensor):
            item = _tensor_as_number(item, target)
        elif isinstance(item, np.generic):
            _check_numpy_scalar(item, target)
        items.append(_storable_items(item, target))
    return items


def _check_numpy_scalar(item, target):
    """torch stores an integer or bool only from what Python reads as an int (``__index__``) or a
    float: a NumPy bool into an integer dtype, a NumPy float16/float32 into an integer or bool dtype
    are its TypeError (NumPy float64 is a Python float: it is taken)."""
    is_bool, is_float = isinstance(item, np.bool_), isinstance(item, np.floating)
    if (target.kind in "iu" and is_bool) or (target.kind in "biu" and is_float
                                             and not isinstance(item, float)):
        raise TypeError(f"'numpy.{type(item).__name__}' object cannot be interpreted as an integer")


def _tensor_as_number(t, target):
    """The number a tensor in ``tensor()``'s list holds; torch reads an integer or bool dtype's
    number through ``__index__``, which a floating tensor refuses (TypeError)."""
    if target.kind in "biu" and dtypes.is_floating(t.dtype):
        raise TypeError("only integer tensors of a single element can be converted to an index")
    if t.numel() != 1:
        raise ValueError("only one element tensors can be converted to Python scalars")
    if t._requires_grad:  # torch's warning, word for word
        warnings.warn("Converting a tensor with requires_grad=True to a scalar may lead to unexpected "
                      "behavior.\nConsider using tensor.detach() first.", UserWarning, stacklevel=4)
    return t.item()


def _check_item(item, first_is_sequence, first):
    """torch's TypeErrors for a list whose items are not alike (NumPy would raise ValueError, or take
    them): a number where the first item was a list ([[1], 2]), a list where it was a number
    ([1, [2]]), a string among numbers, a 0-d NumPy array."""
    if isinstance(item, np.ndarray) and item.ndim == 0:
        raise TypeError("len() of unsized object")
    if isinstance(item, str) and not isinstance(first, str):
        raise TypeError("new(): invalid data type 'str'")
    if _is_sequence(item) != first_is_sequence and not isinstance(item, str):
        raise TypeError("not a sequence" if first_is_sequence else
                        f"'{type(item).__name__}' object cannot be interpreted as a number")


def _assignable_numpy_scalar(value, dtype):
    """``x[i] = v`` with a NumPy scalar, as torch takes it: NumPy ints and float64 (a Python float's
    subclass) as the Python number they hold; the other NumPy scalars are torch's TypeError."""
    if isinstance(value, (np.integer, np.float64)):
        return dtypes.python_number(value)
    raise TypeError(f"can't assign a numpy.{type(value).__name__} to a "
                    f"torch.{dtypes.torch_name(dtype)}Tensor")


def _as_int64(value):
    """``value``, or torch's ValueError for a Python int that int64 cannot hold (torch reads the ints
    of ``tensor(data)`` and of ``x[i] = v`` as int64, not uint64)."""
    if _beyond_int64(value):
        raise ValueError("Overflow when unpacking long long")
    return value


def _beyond_int64(value):
    """True for a Python int that int64 cannot hold (bools are ints too, but small)."""
    return isinstance(value, int) and not -2**63 <= value < 2**63


def _refuse_non_numbers(data):
    """torch's errors for ``tensor(data)`` when ``data`` holds something other than numbers."""
    if data.dtype.kind == "u" or (data.dtype.kind == "O" and any(_beyond_int64(x) for x in data.flat)):
        # NumPy makes uint64 (or objects) of Python ints past int64; torch has no such inferred dtype
        raise ValueError("Overflow when unpacking long long")
    if data.dtype.kind in "US":
        if data.ndim == 0:
            raise TypeError("new(): invalid data type 'str'")
        raise ValueError("too many dimensions 'str'")
    culprit = next(x for x in data.flat if not isinstance(x, (int, float, complex, bool, np.generic)))
    raise RuntimeError(f"Could not infer dtype of {type(culprit).__name__}")


# ----------------------------------------------------------------------------------------------
# The backward engine
# ----------------------------------------------------------------------------------------------
def _backward(ctx, g, prof, backward=None):
    """``ctx.fn.backward`` (or ``backward``) for the gradient ``g``, timed when the profiler ``prof`` is on."""
    backward = backward or ctx.fn.backward
    if prof is None:
        return backward(ctx, g)
    start = time.perf_counter()
    in_grads = backward(ctx, g)
    prof.record(ctx.fn.__name__, "backward", time.perf_counter() - start, ctx.fn.backward_flops(ctx))
    return in_grads


def _backward_onto(ctx, g, grads, summed_here):
    """``ctx``'s gradients through its op's ``backward_onto``: its first input's gradient added onto what that input's
    other uses gave so far, the sum stored for that input's node (the first entry returned is then None).

    torch's engine adds each node's gradient for a tensor into that tensor's buffer as the node runs, latest node
    first (q, k and v's LoRA layers share x: ``((((v_lora + v_base) + k_lora) + k_base) + q_lora) + q_base``). An
    op that is two of torch's nodes gives its two parts where torch's would go, not their sum: other roundings.
    ``summed_here``: the nodes whose sum is an array the op made for this pass (nothing else holds it), which the
    next op may add onto in place, as torch's buffer is added onto in place when nothing else holds it."""
    parent = ctx.parents[0]
    if parent is None or not ctx.needs_input_grad[0]:  # (a leaf's gradient goes to .grad: added there)
        return ctx.fn.backward(ctx, g)
    in_grads = ctx.fn.backward_onto(ctx, g, grads.get(parent), parent in summed_here)
    if in_grads[0] is not None:
        grads[parent] = _fit(in_grads[0], ctx.inputs[0])
        summed_here.add(parent)
    return (None,) + in_grads[1:]


def _topological_order(root):
    """Every node ``root`` (a Context) was computed from, each before the nodes of its inputs.

    An op always runs after the ops that made its inputs, so sorting the nodes by creation number
    (``ctx.seq``), latest first, is a topological order (PyTorch's engine uses the same idea).
    The walk follows ``ctx.parents``, the nodes the inputs had when the op ran: an in-place op later
    gives a tensor a new node, but what was computed before still depends on the old one.
    """
    # found: the nodes as dict keys (a node hashes by identity), in the order the walk meets them --
    # nearly latest first already, which the sort below (stable, run-aware) finishes quickly
    found = {root: None}
    stack = [root]
    while stack:
        for parent in stack.pop().parents:
            if parent is not None and parent not in found:
                found[parent] = None
                stack.append(parent)
    return sorted(found, key=_creation_number, reverse=True)


_creation_number = operator.attrgetter("seq")


def _leading_to(nodes, leaves, targets):
    """The nodes among ``nodes`` (latest first) whose backward leads to a wanted tensor -- a leaf whose id
    is in ``leaves``, or a non-leaf whose node's id is in ``targets`` -- as ids. torch's grad() runs only
    these: its pass stops at a non-leaf input instead of going on past it (differentiating, freeing, or
    refusing at the nodes that made it)."""
    leading = set()
    for ctx in reversed(nodes):  # (earliest first: a node's parents are decided before it)
        for x, parent in zip(ctx.inputs, ctx.parents):
            if id(x) in leaves if parent is None else (id(parent) in leading or id(parent) in targets):
                leading.add(id(ctx))
                break
    return leading


def _refuse_complex_gradient(ctx):
    raise NotImplementedError(
        f"minilora's autograd has no complex derivative for {ctx.fn.__name__} (a complex gradient reached it, "
        f"e.g. from linalg.eig's outputs): differentiate through .real, .imag, .abs(), .angle() or view_as_real "
        f"of complex results first, or use torch")


def _given_twice(array, in_grads):
    """Is ``array`` handed to more than one input of this node? A leaf's first gradient becomes its
    ``.grad`` as it is, and later ones are added into it in place: so an array that is also on its way
    elsewhere -- the node's own incoming gradient passed through (``a + b``, ``b - b``), or one array
    returned for several inputs -- is copied first. (Without the copy, ``a + (a + b)`` gave b twice
    its gradient and ``(a - c) + (b - b)`` gave a none.) Checked only at a leaf's first gradient."""
    return sum(other is array for other in in_grads) > 1

def _complex_node_backward(ctx, g, prof, retain_graph):
    """A node's backward on a complex gradient ``g`` (torch's convention: minilora/complex_numbers.py).
    ``complex_grad = True``: the op's backward takes ``g`` as it is (a derivative linear with real
    coefficients, or one written for complex numbers). ``"holomorphic"``: the op is analytic (mul, exp,
    matmul), so its real formula ``f'(z) * g`` run on ``conj(g)`` and conjugated is torch's
    ``conj(f'(z)) * g``. Any other op refuses."""
    how = ctx.fn.complex_grad
    if not how:
        _refuse_complex_gradient(ctx)
    if how != "holomorphic":
        return _node_backward(ctx, g, prof, retain_graph)
    conj = ctx.device.xp.conj
    in_grads = _node_backward(ctx, conj(g), prof, retain_graph)
    return tuple(None if ig is None else conj(ig) for ig in in_grads)


def _fit(g, t):
    """The gradient ``g`` for tensor ``t``: an array of ``t``'s shape and dtype (the real part of a complex
    gradient for a real tensor, as torch's handle_r_to_c)."""
    if g.dtype.kind == "c" and t._array.dtype.kind != "c":
        g = g.real
    if not g.shape and isinstance(g, np.generic):  # NumPy turns 0-d results into scalars
        g = np.asarray(g)
    if g.shape != t._array.shape:
        raise RuntimeError(f"internal error: gradient of shape {g.shape} for a tensor of shape "
                           f"{t._array.shape} (produced by {t._ctx.fn.__name__ if t._ctx else 'a leaf'})")
    if g.dtype is not t._array.dtype and g.dtype != t._array.dtype:  # (`is`: the cheap common case)
        g = dtypes.cast(g, t._array.dtype)  # after dtype promotion, each input gets a gradient of its dtype
    return g


class _GradStore:
    """Adds the gradients one backward pass computes for leaves (and retain_grad() tensors) into
    their ``.grad``.

    The first gradient becomes ``t.grad`` without a copy when the array is the op's own (a fresh
    array no other tensor holds); a view, or an array already handed to another tensor, is copied,
    so that ``p.grad.zero_()`` or ``p.grad.mul_(c)`` never writes into another tensor's gradient.
    Later gradients are added in place, as torch does. A weight used by several ops gets several
    gradients in one pass; torch sums them first and adds the sum once, so its ``.grad`` changes
    version once per backward -- counted here the same way.
    """

    def __init__(self, seed):
        self.handed_out = {id(seed)}  # arrays a .grad holds (the seed is the caller's)
        self.changed = set()  # the .grad tensors this pass made or added into

    def add(self, t, g):
        if _grad_dtypes:  # (a leaf's grad_dtype: the incoming gradient cast to it, as torch's engine does)
            g = _cast_to_grad_dtype(t, g)
        grad = t._grad
        if grad is None:
            if getattr(g, "base", None) is not None or id(g) in self.handed_out:
                g = _meta_ops.unwritten(g.shape, g.dtype) if t._device is _META else g.copy()
            self.handed_out.add(id(g))
            t._grad = grad = Tensor._make(g, t._device, False, None)
            grad.__class__ = _UnseenGrad
            self.changed.add(id(grad))
            return
        array = grad._array
        if t._device is _META and array.shape == g.shape:  # (no values to add: the version still counts)
            pass
        elif array.dtype is g.dtype:  # (`is`: the common case, quickly)
            try:
                array += g
            except ValueError:  # a read-only array (e.g. a .grad the user set to an expand()ed tensor)
                grad._array = array + g
        else:  # (added in place as torch's: the .grad keeps its dtype, whatever grad_dtype=None let in)
            grad._array = dtypes.cast(array + g, array.dtype)
        if id(grad) in self.changed:
            return  # this pass already counted its change
        self.changed.add(id(grad))
        if type(grad) is _UnseenGrad:  # no op can have it as an input: count the change, nothing to check
            if grad._counter is None:
                grad._counter = [0]
            grad._counter[0] += 1
        else:
            grad._bump_version()


class _InputsGradStore(_GradStore):
    """``backward(inputs=...)``: adds into the ``.grad`` of the given tensors only (torch's rule), a
    non-leaf among them included (as torch, by turning its retain_grad() on); other leaves keep theirs.
    retain_grad() tensors on the way still get theirs, as in torch."""

    def __init__(self, seed, inputs):
        inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
        if not inputs:
            raise RuntimeError("`inputs` argument to `backward()` cannot be empty.")
        for t in inputs:
            if not t._requires_grad:  # (torch's words for it)
                raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        super().__init__(seed)
        self.leaves = {id(t) for t in inputs if t._ctx is None}
        for t in inputs:
            if t._ctx is not None:  # torch turns retain_grad() on: .grad filled after its hooks, and kept on
                t.retain_grad()

    def takes(self, t):
        """Does a gradient for ``t`` go anywhere? (A left-out leaf's hooks do not run, as in torch.)"""
        return t._ctx is not None or id(t) in self.leaves

    def add(self, t, g):
        if self.takes(t):
            super().add(t, g)


class _UnseenGrad(Tensor):
    """A ``.grad`` the engine made that no user code has read yet (``Tensor.grad`` turns it into a
    plain Tensor on the first read). Adding into it in place still counts as a change of version,
    as in torch, but no op can have saved it, so backward's checks need not look (``_last_change``
    stays): accumulating a weight's gradient many times in one backward stays cheap."""
    __slots__ = ()


# id(leaf) -> (weak reference to it, the dtype its .grad takes or None for any): ``x.grad_dtype = ...``
# (ops/rare_methods.py); empty unless one was set, so the engine pays one test of an empty dict.
_grad_dtypes = {}


def _grad_dtype_of(t):
    """The dtype ``t.grad`` must have: ``t``'s own, another its ``grad_dtype`` chose, or None (any)."""
    entry = _grad_dtypes.get(id(t)) if _grad_dtypes else None
    if entry is None or entry[0]() is not t:
        return t._array.dtype
    return entry[1]


def _cast_to_grad_dtype(t, g):
    dtype = _grad_dtype_of(t)
    return g if dtype is None or g.dtype == dtype else dtypes.cast(g, dtype)


# id(leaf) -> (weak reference to it, {handle id: hook}); empty unless hooks are registered.
_post_accumulate_grad_hooks = {}
_leaf_hooks = {}  # the same, for Tensor.register_hook on leaves


def _move_retain_grad(tensor, old_ctx):
    """torch moves retain_grad() to the node an in-place op gave the tensor: its ``.grad`` is the gradient of the
    new value (``b.retain_grad(); b.mul_(3)``: of the product, not of the old b), while hooks registered before
    the change still see the old value's."""
    old_ctx.retained = _no_tensor if old_ctx.hooks else None
    if tensor._ctx is not None:
        tensor._ctx.retained = weakref.ref(tensor)


def _no_tensor():
    """``ctx.retained`` of a node with hooks but no retain_grad(): a dead weak reference."""
    return None


def _run_hooks(hooks, g, device):
    """Pass the gradient ``g`` (an array) through ``register_hook`` hooks, in registration order."""
    for hook in list(hooks.values()):
        out = hook(Tensor._make(g, device, False, None))
        if out is not None:
            g = hook_result(hook, g, out)._array
    return g


def hook_result(hook, g, out):
    """``out``, what a gradient hook returned in place of the gradient ``g`` (an array or a Tensor), checked
    as torch checks it: a Tensor (a number, a list or a NumPy array is torch's TypeError -- NumPy would take
    it as an array), of ``g``'s dtype and shape."""
    if not isinstance(out, Tensor):
        raise TypeError(f"expected Variable, but hook returned '{python_type_name(out)}'")
    _check_hook_result(hook, g._array if isinstance(g, Tensor) else g, out._array)
    return out


def hook_results(hook, out):
    """The gradients a node hook returned (``grad_fn.register_hook`` / ``register_prehook``): a tuple of
    Tensors and Nones, else torch's TypeError (a list is refused too)."""
    if not isinstance(out, tuple):
        raise TypeError(f"expected tuple, but hook returned '{python_type_name(out)}'")
    for value in out:
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(f"expected Variable, but hook returned '{python_type_name(value)}'")
    return out


def python_type_name(value):
    """The name torch's C++ prints for a Python object's type (its ``tp_name``): ``int``, ``numpy.ndarray``."""
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _legacy_type_name(dtype):
    """torch's ``torch.FloatTensor`` for a dtype, the name its hook checks print."""
    from .ops import _TENSOR_TYPE_NAMES, _TYPE_NAMES_WITHOUT_CLASS  # (ops sits above tensor: imported on error)
    return "torch." + {**_TENSOR_TYPE_NAMES, **_TYPE_NAMES_WITHOUT_CLASS}.get(str(dtype), str(dtype))


def _check_hook_result(hook, g, new):
    """A hook may change a gradient's values, not its dtype or shape (torch refuses both). ``hook`` is the
    function, or the name torch's message gives it."""
    name = hook if isinstance(hook, str) else getattr(hook, "__name__", type(hook).__name__)
    if new.dtype != g.dtype:
        raise RuntimeError(f"hook '{name}' has changed the type of value (was {_legacy_type_name(g.dtype)} "
                           f"got {_legacy_type_name(new.dtype)})")
    if new.shape != g.shape:
        raise RuntimeError(f"hook '{name}' has changed the size of value (was {tuple(g.shape)} "
                           f"got {tuple(new.shape)})")


_detect_anomaly = False  # autograd.set_detect_anomaly(True): backward refuses NaN gradients, naming the node


def _check_anomaly(ctx, in_grads):
    """torch's anomaly check: a node whose backward returns a NaN names itself."""
    for k, i in enumerate(_edge_inputs(ctx)):
        g = in_grads[i] if i < len(in_grads) else None
        if g is not None and _is_float(g.dtype) and bool(ctx.device.xp.isnan(dtypes.upcast(g)).any()):
            raise RuntimeError(f"Function '{ctx.name()}' returned nan values in its {k}th output.")


def _run_node_prehooks(ctx, g):
    """``grad_fn.register_prehook`` hooks: each sees ``(grad_output,)`` and may return a replacement."""
    for hook in list(ctx.node_prehooks.values()):
        out = hook((Tensor._make(g, ctx.device, False, None),))
        if out is None:
            continue
        out = hook_results(hook, out)
        if len(out) != 1:
            raise RuntimeError(f"hook '{getattr(hook, '__name__', hook)}' has returned an incorrect number of "
                               f"values (got {len(out)}, but expected 1)")
        if out[0] is None:  # (None,): no gradient flows on from this node, as torch
            return None
        _check_hook_result(hook, g, out[0]._array)
        g = out[0]._array
    return g


def _run_node_hooks(ctx, hooks, in_grads, g):
    """``grad_fn.register_hook`` hooks: each sees the gradients for the node's ``next_functions`` and
    ``(grad_output,)``, and may return replacements for the former."""
    slots = _edge_slots(ctx)  # where each of torch's grad_inputs is in in_grads
    in_grads = list(in_grads) + [None] * (len(ctx.inputs) - len(in_grads))
    edge_dtypes = [None if i is None else _edge_dtype(ctx, i) for i, _ in slots]
    grad_output = (Tensor._make(g, ctx.device, False, None),)
    for hook in list(hooks.values()):
        shown = tuple(_shown_grad(in_grads, slot, dtype, ctx.device) for slot, dtype in zip(slots, edge_dtypes))
        out = hook(shown, grad_output)
        if out is None:
            continue
        hook_results(hook, out)
        if len(out) != len(slots):
            raise RuntimeError(f"hook '{getattr(hook, '__name__', hook)}' has returned an incorrect number of "
                               f"values (got {len(out)}, but expected {len(slots)})")
        for (i, transposed), before, new in zip(slots, shown, out):
            if i is None:
                continue
            new = None if new is None else (new._array.T if transposed else new._array)
            if new is not None and in_grads[i] is not None:
                _check_hook_result(hook, before._array.T if transposed else before._array, new)
                new = dtypes.cast(new, in_grads[i].dtype)  # (back into the hidden cast's dtype: exact)
            in_grads[i] = new
    return tuple(in_grads)


def _edge_dtype(ctx, i):
    """The dtype of the tensor torch's next_functions entry stands for: a cast torch makes inside the op (type
    promotion's, shown_as_its_input) is no node of torch's, so its grad_inputs have its input's dtype (torch's
    engine casts each to its edge's dtype before the node's post hooks run), not the promoted one."""
    x, parent = ctx.inputs[i], ctx.parents[i] if i < len(ctx.parents) else None
    while parent is not None and parent.fn.shown_as_its_input and parent.inputs:
        x, parent = parent.inputs[0], parent.parents[0]
    return x._array.dtype if isinstance(x, Tensor) else None


def _shown_grad(in_grads, slot, dtype, device):
    i, transposed = slot
    g = None if i is None else in_grads[i]
    if g is None:
        return None
    if dtype is not None and g.dtype != dtype and dtypes.is_floating(dtype) == dtypes.is_floating(g.dtype):
        g = dtypes.cast(g, dtype)
    return Tensor._make(g.T if transposed else g, device, False, None)


def _edge_slots(ctx):
    """For each of torch's ``next_functions`` of the node: ``(position in ctx.inputs, transposed?)``,
    ``(None, False)`` where torch's input is not minilora's (a target). A node minilora makes of several
    ops (mse_loss: its ``torch_graph`` names inputs the last op does not have) refuses node hooks."""
    graph = ctx.__dict__.get("torch_graph")
    if graph is None:
        return [(i, False) for i in _edge_inputs(ctx)]
    slots = []
    for entry in graph:
        transposed = isinstance(entry, tuple) and entry[0] == "TBackward0" and len(entry) == 2
        x = entry[1] if transposed else entry
        found = [i for i, y in enumerate(ctx.inputs) if y is x] if isinstance(x, Tensor) else []
        if x is not None and not found:
            raise NotImplementedError(f"grad_fn.register_hook on {ctx.name()}: minilora computes this node "
                                      "with several ops, or with nodes torch shows under it in one (LoRA's "
                                      "fused Linear), so its grad_inputs are not torch's; its grad_outputs "
                                      "are (grad_fn.register_prehook), or hook the input tensors with "
                                      "Tensor.register_hook instead")
        slots.append((found[0] if found else None, transposed))
    return slots


def _edge_inputs(ctx):
    """The positions of the node's inputs that have a ``next_functions`` entry (see Context)."""
    numbers = ctx.fn.__name__ in _WRAPPED_NUMBERS
    return [i for i, x in enumerate(ctx.inputs)
            if (_is_float(x._array.dtype) if isinstance(x, Tensor) else numbers)]


def _hooked_leaf(t):
    """The hooks registered on leaf ``t`` (None if there are none)."""
    entry = _leaf_hooks.get(id(t))
    return entry[1] if entry is not None and entry[0]() is t and entry[1] else None


class RemovableHandle:
    """What every ``register_*hook`` returns (a tensor's, a node's, a module's, an optimizer's):
    ``handle.remove()`` takes the hook out again (also as ``with module.register_forward_hook(fn):``), as
    ``torch.utils.hooks.RemovableHandle``. Its ``id`` is the hook's key in its dict, drawn from one counter
    for all of them from 0, as torch's class counter (``print(module._forward_hooks)`` shows torch's keys)."""

    __module__ = "minilora.utils.hooks"  # (torch.utils.hooks.RemovableHandle: where users import it from)
    _ids = itertools.count()

    def __init__(self, hooks_dict, *, extra_dict=None):
        self.hooks_dict_ref, self.id = hooks_dict, next(RemovableHandle._ids)
        self.extra_dict_ref = extra_dict  # a dict or a list of dicts keyed by the same id (a hook's flags)

    def remove(self):
        self.hooks_dict_ref.pop(self.id, None)
        extra = self.extra_dict_ref
        for flags in (extra if isinstance(extra, list) else [] if extra is None else [extra]):
            flags.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


_HookHandle = RemovableHandle


def _grad_state(t):
    return None if t._grad is None else (id(t._grad), t._grad._version)


def _grads_before():
    """The hooked leaves alive now, with their gradient's identity and version before a backward."""
    if not _post_accumulate_grad_hooks:
        return ()
    for key in [k for k, (ref, hooks) in _post_accumulate_grad_hooks.items() if ref() is None or not hooks]:
        del _post_accumulate_grad_hooks[key]
    live = [(ref(), hooks) for ref, hooks in _post_accumulate_grad_hooks.values()]  # (held: a collection between
    return [(leaf, hooks, _grad_state(leaf)) for leaf, hooks in live if leaf is not None]  # two ref() calls frees one)


def _run_post_accumulate_grad_hooks(watched):
    """Call the hooks of the leaves whose gradient this backward created or added to. Which ones is decided
    before any hook runs: a hook may write other leaves' gradients (DDP's reduction fills a locally unused
    parameter's), and those leaves got no gradient from this backward, so torch calls no hook of theirs."""
    changed = [(leaf, hooks) for leaf, hooks, before in watched if _grad_state(leaf) != before]
    for leaf, hooks in changed:
        for hook in list(hooks.values()):
            _returns_none(hook(leaf))


def _returns_none(out):
    """A post-accumulate-grad hook returns nothing: torch refuses a Tensor (RuntimeError) and anything else
    (TypeError), where minilora threw the value away and the user's update looked applied."""
    if isinstance(out, Tensor):
        raise RuntimeError("Tensor post accumulate grad hooks should return None.")
    if out is not None:
        raise TypeError(f"expected Variable, but hook returned '{python_type_name(out)}'")


def _node_backward(ctx, g, prof, retain_graph, backward=None):
    """One node's own backward on its summed gradient ``g``: a tuple with a gradient (or None) per input.
    Saved tensors that hooks packed are unpacked for the call (and packed again if the graph is kept).
    ``backward``: what computes it, ``(ctx, g) -> gradients`` (_backward_onto's), instead of ``ctx.fn.backward``."""
    packed = ctx.packed if _saved_hooks_used else None
    if packed is not None:
        _unpack_saved(ctx)
    if g.itemsize == 2:  # a 16-bit gradient: overflow to inf silently, as torch (NumPy would warn)
        with np.errstate(all="ignore"):
            in_grads = _backward(ctx, g, prof, backward)
    elif prof is None:
        in_grads = (backward or ctx.fn.backward)(ctx, g)
    else:
        in_grads = _backward(ctx, g, prof, backward)
    if packed is not None and retain_graph:
        _repack(ctx)
    return in_grads if type(in_grads) is tuple else (in_grads,)


def _run_backward(root, gradient, retain_graph, store=None):
    # store: where gradients go -- by default the leaves' .grad; autograd.grad() passes its own
    # (with `.nodes`: the non-leaf tensors' nodes whose gradient it wants) and .grad stays untouched
    store = _GradStore(gradient) if store is None else store
    wanted = getattr(store, "nodes", None)
    if root._ctx is None:  # backward on a leaf: its gradient is the seed itself
        hooks = _hooked_leaf(root) if _leaf_hooks else None
        store.add(root, gradient if hooks is None else _fit(_run_hooks(hooks, gradient, root._device), root))
        return
    grads = {root._ctx: gradient}  # node -> gradient summed so far, until it is used
    summed_here = set()  # the nodes whose gradient in `grads` is an array of this pass's own (_backward_onto)
    hooked = {}  # id(leaf) -> [leaf, gradient summed so far]: leaves with hooks (see register_hook)
    prof = profiler.active
    plain = prof is None and not _saved_hooks_used  # (then a float32/float64 node's backward is called inline)
    order = _topological_order(root._ctx)
    if wanted:  # autograd.grad(..., inputs=[a non-leaf]): only the nodes on the way to the inputs run
        leading = _leading_to(order, store.leaves, wanted)
        order = [ctx for ctx in order if id(ctx) in leading or id(ctx) in wanted]
    for ctx in order:
        g = grads.pop(ctx, None)
        if g is None:  # no path from root carried a gradient here
            continue
        if wanted and id(ctx) in wanted:
            store.add_node(ctx, g)
            if id(ctx) not in leading:  # (nothing wanted lies past this input: its node does not run)
                continue
        if ctx.freed:
            ctx._refuse_freed()  # (torch's words: its engine names no node)
        if ctx.seq <= _last_change:  # something changed in place after this node was made
            _check_versions(ctx)
        node_hooks = None
        if ctx.retained is not None:  # retain_grad() or register_hook() on this node's output or node
            if ctx.hooks:
                g = _run_hooks(ctx.hooks, g, ctx.device)
            if ctx.retained() is not None:
                store.add(ctx.retained(), g)
            if ctx.node_prehooks:
                g = _run_node_prehooks(ctx, g)
                if g is None:
                    continue
            node_hooks = ctx.node_hooks
        # This loop runs once per node (tens of thousands per step): the common case is written inline,
        # the rare ones (complex, 16-bit, profiler, saved-tensor hooks) go through _node_backward.
        # (`is`: NumPy's float32 and float64 dtypes are singletons; another equal dtype object takes the
        # general path, which gives the same result.)
        dtype = g.dtype
        if ctx.device is _META and ctx.fn.meta_gradients:  # shapes, not values: no backward arithmetic
            in_grads = _meta_ops.gradients(ctx)
        elif ctx.fn.backward_onto is not None and not (node_hooks or _detect_anomaly) and (
                dtype is _FLOAT32 or dtype is _FLOAT64):  # (float32/float64 only: what backward_onto is for)
            onto = functools.partial(_backward_onto, grads=grads, summed_here=summed_here)
            in_grads = onto(ctx, g) if plain else _node_backward(ctx, g, prof, retain_graph, onto)
        elif plain and (dtype is _FLOAT32 or dtype is _FLOAT64):
            in_grads = ctx.fn.backward(ctx, g)
            if type(in_grads) is not tuple:
                in_grads = (in_grads,)
        elif dtype.kind == "c":
            in_grads = _complex_node_backward(ctx, g, prof, retain_graph)
        else:
            in_grads = _node_backward(ctx, g, prof, retain_graph)
        if node_hooks:
            in_grads = _run_node_hooks(ctx, node_hooks, in_grads, g)
        if _detect_anomaly:
            _check_anomaly(ctx, in_grads)
        # Each input's gradient goes on: a leaf's into the store (or, if the leaf has hooks, summed in
        # `hooked` to be hooked once at the end), an inner node's added to what `grads` holds for it.
        for x, parent, need, ig in zip(ctx.inputs, ctx.parents, ctx.needs_input_grad, in_grads):
            if need and ig is not None:
                array, shape = x._array, ig.shape
                if ig.dtype is not array.dtype or shape != array.shape or not shape:
                    ig = _fit(ig, x)  # cast, check the shape, turn a NumPy scalar into an array
                if parent is None:
                    if not x._requires_grad:  # a view that requires grad through its base only: no .grad
                        continue
                    if _leaf_hooks and _hooked_leaf(x) is not None:  # summed first, hooked once
                        entry = hooked.setdefault(id(x), [x, None])
                        entry[1] = ig if entry[1] is None else entry[1] + ig
                    else:
                        if x._grad is None and (ig is g or _given_twice(ig, in_grads)):
                            ig = ig.copy()  # (see _given_twice)
                        store.add(x, ig)
                else:  # e.g. the residual stream of a transformer: large, so the sum is split across threads
                    prev = grads.get(parent)
                    grads[parent] = ig if prev is None else prev if x._device is _META else parallel.add(prev, ig)
        if not retain_graph:
            ctx.free()
    for leaf, g in hooked.values():
        if hasattr(store, "takes") and not store.takes(leaf):  # backward(inputs=...) left it out
            continue
        store.add(leaf, _fit(_run_hooks(_hooked_leaf(leaf), g, leaf._device), leaf))


from . import ops as _ops  # noqa: E402,F401  (importing ops attaches the operators to Tensor)
from .ops import meta as _meta_ops  # noqa: E402  (the meta device's shape rules, attached to the ops just made)
