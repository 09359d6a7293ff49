"""Tensor and reverse-mode autograd -- the whole engine in one file.

A ``Tensor`` wraps an array (``data``), where it lives (``device``) and, when it was computed by an op
that needs gradients, the ``Context`` of that op (``_ctx``). A Context remembers which op ran
(``fn``), its input tensors, what forward saved for backward, and which inputs need a gradient.

``loss.backward()`` walks the graph of Contexts in reverse topological order, calls each op's
``backward(ctx, grad)`` on raw arrays, and adds the returned gradients into the inputs. Leaf tensors
(created by the user, ``requires_grad=True``) accumulate them in ``.grad``.

Ops themselves live in ``minilora/ops``: each is a ``Function`` subclass with
``forward(ctx, *arrays)`` and ``backward(ctx, grad)``. ``Function.apply`` is the one door every op
goes through: it unwraps tensors, checks devices, runs forward, records the node in the graph only if
an input needs a gradient, and wraps the result.
"""
import itertools
import operator
import time

import numpy as np

from . import parallel, profiler
from .device import Device, device as _get_device

__all__ = ["Tensor", "Function", "Context", "tensor", "no_grad", "enable_grad", "set_grad_enabled",
           "is_grad_enabled"]

# ----------------------------------------------------------------------------------------------
# Grad mode
# ----------------------------------------------------------------------------------------------
_grad_enabled = True


def is_grad_enabled():
    return _grad_enabled


class set_grad_enabled:
    """Context manager (and decorator) that turns graph building on or off."""

    def __init__(self, mode):
        self.mode = bool(mode)

    def __enter__(self):
        global _grad_enabled
        self.prev, _grad_enabled = _grad_enabled, self.mode

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.prev
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(self.mode):  # a fresh one per call: safe when nested
                return fn(*args, **kwargs)
        return wrapper


class no_grad(set_grad_enabled):
    """``with no_grad():`` -- ops record no graph (inference, optimizer updates)."""

    def __init__(self):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    def __init__(self):
        super().__init__(True)


# ----------------------------------------------------------------------------------------------
# Function and Context: one node of the graph
# ----------------------------------------------------------------------------------------------
class Context:
    """What an op keeps between forward and backward. Ops set any attribute they need.

    The engine's own fields are slots; whatever an op saves (``ctx.a = a``) lands in the instance
    ``__dict__``, so ``free()`` can drop all of it with one ``clear()``.
    """

    __slots__ = ("fn", "device", "needs_input_grad", "inputs", "seq", "freed", "__dict__")

    def __init__(self, fn, device, needs_input_grad):
        self.fn = fn
        self.device = device
        self.needs_input_grad = needs_input_grad  # tuple of bools, one per positional input
        self.inputs = ()  # the input Tensors (set only when the node is recorded in the graph)
        self.seq = 0  # creation number of a recorded node: the backward engine's ordering
        self.freed = False  # True once backward has used the node and dropped what it saved

    def save_for_backward(self, *arrays):
        self.saved = arrays

    def free(self):
        """Drop everything saved: the graph has been used once (see ``retain_graph``)."""
        self.__dict__.clear()
        self.inputs = ()
        self.freed = True


_sequence = itertools.count(1)  # numbers recorded nodes in creation order


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
        grad_on = _grad_enabled
        dev = None
        arrays, needs = [], []
        for x in inputs:
            if isinstance(x, Tensor):
                if dev is None:
                    dev = x._device
                elif x._device is not dev:
                    raise RuntimeError(f"{cls.__name__}: expected all tensors on the same device, "
                                       f"got {dev.name} and {x._device.name}; move one with .to()")
                arrays.append(x.data)
                needs.append(grad_on and x.requires_grad)
            else:  # Python/NumPy scalars and None pass straight through
                arrays.append(x)
                needs.append(False)
        fn = cls
        if cls.kernel_forward is not None and dev is not None and dev.uses_kernels:
            fn = _on_kernels(cls, arrays)
        ctx = Context(fn, dev, tuple(needs))
        if profiler.active is None:
            out = fn.forward(ctx, *arrays, **options)
        else:
            start = time.perf_counter()
            out = fn.forward(ctx, *arrays, **options)
            profiler.active.record(cls.__name__, "forward", time.perf_counter() - start,
                                   cls.flops(ctx, arrays, out))
        if isinstance(out, np.generic):  # NumPy turns 0-d results into scalars; keep arrays
            out = np.asarray(out)
        if True in needs:
            ctx.inputs = inputs
            ctx.seq = next(_sequence)
            return Tensor._make(out, dev, True, ctx)
        return Tensor._make(out, dev, False, None)


def _on_kernels(cls, arrays):
    """``cls`` with its kernel_forward / kernel_backward as forward / backward when minilora.kernels
    takes these arrays' dtype, else ``cls`` itself (its NumPy math runs on the device's arrays).

    The kernel variant is a subclass made once per op, of the same name: the backward engine calls
    ``ctx.fn.backward`` and the profiler reads ``ctx.fn.__name__``, whichever path ran."""
    from . import kernels
    if not kernels.supports(*(a.dtype for a in arrays if hasattr(a, "dtype"))):
        return cls
    variant = cls.__dict__.get("_kernel_variant")
    if variant is None:
        variant = type(cls.__name__, (cls,), {"forward": staticmethod(cls.kernel_forward),
                                              "backward": staticmethod(cls.kernel_backward),
                                              "__qualname__": cls.__qualname__, "__module__": cls.__module__})
        cls._kernel_variant = variant
    return variant


# ----------------------------------------------------------------------------------------------
# Tensor
# ----------------------------------------------------------------------------------------------
_DEFAULT_FLOAT = np.float32


def _to_dtype(dtype):
    if dtype is None:
        return None
    if isinstance(dtype, str):
        dtype = {"bf16": "float32", "half": "float16", "float": "float32",
                 "double": "float64"}.get(dtype, dtype)
    return np.dtype(dtype)


class Tensor:
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_device", "_retain", "__weakref__")

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        dev = _get_device(device)
        if isinstance(data, Tensor):
            data = data.data
        dtype = _to_dtype(dtype)
        if dtype is None and not hasattr(data, "dtype"):
            # Python numbers and lists: floats become float32 (PyTorch's default), ints int64.
            data = np.asarray(data)
            if data.dtype.kind == "f":
                data = data.astype(_DEFAULT_FLOAT)
        array = dev.xp.asarray(data, dtype=dtype)
        if requires_grad and array.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got {array.dtype}")
        self.data = array
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self._device = dev
        self._retain = False

    @classmethod
    def _make(cls, data, dev, requires_grad, ctx):
        """Fast constructor used by ops: no conversion, no checks."""
        t = object.__new__(Tensor)
        t.data = data
        t.grad = None
        t.requires_grad = requires_grad
        t._ctx = ctx
        t._device = dev
        t._retain = False
        return t

    # --- what it is ---------------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return self._device

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def grad_fn(self):
        return self._ctx

    def size(self, dim=None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self):
        return int(self.data.size)

    def dim(self):
        return self.data.ndim

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        extra = f", device='{self._device.name}'" if self._device.name != "cpu" else ""
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(self.numpy(), separator=", ", precision=4, threshold=20)
        return f"tensor({body}, dtype={self.dtype}{extra}{grad})"

    # --- leaving the graph / the device ------------------------------------------------------
    def numpy(self):
        """The values as a NumPy array (copied from the GPU on ``cuda``)."""
        data = self.data
        return data if isinstance(data, np.ndarray) else data.get()

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """Same data, no graph, no gradient."""
        return Tensor._make(self.data, self._device, False, None)

    def clone(self):
        from . import ops
        return ops.clone(self)

    def contiguous(self):
        return self

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor: use .detach() instead")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward (for inspection)."""
        self._retain = True

    def to(self, device=None, dtype=None):
        """A copy on another device and/or dtype (``self`` if nothing changes), differentiable."""
        from . import ops
        out = self
        if dtype is not None and _to_dtype(dtype) != self.dtype:
            out = ops.astype(out, _to_dtype(dtype))
        if device is not None and _get_device(device) is not self._device:
            out = ops.to_device(out, _get_device(device))
        return out

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    def half(self):
        return self.to(dtype=np.float16)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    # --- in-place updates (outside autograd: optimizers, initialisers) -----------------------
    def _check_inplace(self):
        if _grad_enabled and self.requires_grad and self._ctx is None:
            raise RuntimeError("a leaf tensor that requires grad is being changed in place; "
                               "wrap the update in `with minilora.no_grad():`")

    def copy_(self, other):
        self._check_inplace()
        src = other.data if isinstance(other, Tensor) else other
        src = self._device.xp.asarray(src)
        if src.shape != self.shape and np.broadcast_shapes(src.shape, self.shape) != self.shape:
            raise ValueError(f"copy_: source shape {src.shape} does not fit destination {self.shape}")
        self.data[...] = src
        return self

    def zero_(self):
        self._check_inplace()
        self.data[...] = 0
        return self

    def fill_(self, value):
        self._check_inplace()
        self.data[...] = value
        return self

    # --- autograd ------------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        A scalar needs no ``gradient``; any other tensor needs one of its own shape (the vector in
        the vector-Jacobian product). The graph is freed afterwards unless ``retain_graph=True``.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of the computation had requires_grad=True)")
        xp = self._device.xp
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar output, but this "
                                   f"tensor has shape {self.shape}; pass gradient= of that shape")
            gradient = xp.ones_like(self.data)
        else:
            gradient = gradient.data if isinstance(gradient, Tensor) else xp.asarray(gradient)
            if gradient.shape != self.shape:
                raise RuntimeError(f"backward(): gradient has shape {gradient.shape} but the "
                                   f"tensor has shape {self.shape}")
            gradient = gradient.astype(self.dtype, copy=False)
        with parallel.computing():  # BLAS on one thread while minilora computes (minilora/parallel.py)
            _run_backward(self, gradient, retain_graph)

    # --- operators --------------------------------------------------------------------------------
    # +, -, *, /, **, @, unary -, indexing and methods such as x.sum() are the op wrappers themselves,
    # attached to Tensor at the end of minilora/ops/__init__.py (next to the ops they call).

    # Comparisons give boolean tensors outside the graph (no gradient through a comparison).
    def _compare(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._make(op(self.data, other), self._device, False, None)

    def __lt__(self, other): return self._compare(other, np.less)
    def __le__(self, other): return self._compare(other, np.less_equal)
    def __gt__(self, other): return self._compare(other, np.greater)
    def __ge__(self, other): return self._compare(other, np.greater_equal)
    def __eq__(self, other): return self._compare(other, np.equal)
    def __ne__(self, other): return self._compare(other, np.not_equal)
    __hash__ = object.__hash__

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a tensor with shape {self.shape} is ambiguous")
        return bool(self.data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu":
            raise TypeError(f"only integer tensors can be used as an index, got {self.dtype}")
        return int(self.item())


def tensor(data, dtype=None, device=None, requires_grad=False):
    """``minilora.tensor([[1., 2.]], dtype='float64', device='cpu', requires_grad=True)``."""
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


# ----------------------------------------------------------------------------------------------
# The backward engine
# ----------------------------------------------------------------------------------------------
def _topological_order(root):
    """Every tensor ``root`` was computed from that has a Context, each before its inputs.

    An op always runs after the ops that made its inputs, so sorting the nodes by creation number
    (``ctx.seq``), latest first, is a topological order (PyTorch's engine uses the same idea).
    """
    found = {id(root): root}
    stack = [root]
    while stack:
        for x in stack.pop()._ctx.inputs:
            if isinstance(x, Tensor) and x._ctx is not None and id(x) not in found:
                found[id(x)] = x
                stack.append(x)
    return sorted(found.values(), key=_creation_number, reverse=True)


_creation_number = operator.attrgetter("_ctx.seq")


def _accumulate(grads, t, g):
    """Add ``g`` into the gradient of ``t``: its ``.grad`` for a leaf, the pending dict otherwise."""
    if not g.shape and isinstance(g, np.generic):  # NumPy turns 0-d results into scalars
        g = np.asarray(g)
    if g.shape != t.data.shape:
        raise RuntimeError(f"internal error: gradient of shape {g.shape} for a tensor of shape "
                           f"{t.data.shape} (produced by {t._ctx.fn.__name__ if t._ctx else 'a leaf'})")
    if g.dtype is not t.data.dtype and g.dtype != t.data.dtype:  # (`is`: the cheap common case)
        g = g.astype(t.data.dtype)  # after dtype promotion, each input gets a gradient of its dtype
    if t._ctx is None:
        t.grad = g if t.grad is None else t.grad + g
    else:  # e.g. the residual stream of a transformer: large, so the sum is split across threads
        prev = grads.get(id(t))
        grads[id(t)] = g if prev is None else parallel.add(prev, g)


def _run_backward(root, gradient, retain_graph):
    if root._ctx is None:  # backward on a leaf: its gradient is the seed itself
        root.grad = gradient if root.grad is None else root.grad + gradient
        return
    grads = {id(root): gradient}  # id(tensor) -> gradient summed so far, until it is used
    prof = profiler.active
    for t in _topological_order(root):
        g = grads.pop(id(t), None)
        if g is None:  # no path from root carried a gradient here
            continue
        if t._retain:
            t.grad = g if t.grad is None else t.grad + g
        ctx = t._ctx
        if ctx.freed:
            raise RuntimeError(f"trying to backward through the graph a second time (through "
                               f"{ctx.fn.__name__}); the saved arrays were freed after the first "
                               f"backward. Call backward(retain_graph=True) the first time.")
        if prof is None:
            in_grads = ctx.fn.backward(ctx, g)
        else:
            start = time.perf_counter()
            in_grads = ctx.fn.backward(ctx, g)
            prof.record(ctx.fn.__name__, "backward", time.perf_counter() - start,
                        ctx.fn.backward_flops(ctx))
        if type(in_grads) is not tuple:
            in_grads = (in_grads,)
        for x, need, ig in zip(ctx.inputs, ctx.needs_input_grad, in_grads):
            if need and ig is not None:
                _accumulate(grads, x, ig)
        if not retain_graph:
            ctx.free()


from . import ops as _ops  # noqa: E402,F401  (importing ops attaches the operators to Tensor)
