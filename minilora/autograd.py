"""torch.autograd's functional entry points on minilora's engine: ``grad`` and ``backward``.

``grad(outputs, inputs)`` runs the same backward pass as ``Tensor.backward`` (``_run_backward`` in
tensor.py) but hands it a store that keeps the gradients of the chosen ``inputs`` and returns them,
instead of adding into every leaf's ``.grad``.
"""
from . import parallel
from .tensor import Tensor, _run_backward


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

    def add_node(self, ctx, g):
        self._put(self.nodes[id(ctx)], g)


def _as_tuple(x):
    return (x,) if isinstance(x, Tensor) else tuple(x)


def _seed(output, grad_output):
    """The gradient the pass starts from: ones for a scalar, else the caller's, shape-checked."""
    xp = output._device.xp
    if grad_output is None:
        if output._array.size != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        return xp.ones_like(output._array)
    array = grad_output._array if isinstance(grad_output, Tensor) else xp.asarray(grad_output)
    if array.shape != output._array.shape:
        raise RuntimeError(f"Mismatch in shape: grad_output[0] has a shape of {tuple(array.shape)} "
                           f"and output[0] has a shape of {tuple(output.shape)}.")
    return array.astype(output._array.dtype, copy=False)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """torch.autograd.grad: the sum of d(outputs)/d(inputs), as a tuple, without touching ``.grad``."""
    if create_graph:
        raise NotImplementedError("grad(create_graph=True) is not supported: minilora's backward "
                                  "runs on raw arrays and records no graph of its own")
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
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    store = _CaptureStore(inputs)
    last = len(outputs) - 1
    with parallel.computing():
        for k, (out, go) in enumerate(zip(outputs, grad_outputs)):
            if not out.requires_grad:
                raise RuntimeError(f"element {k} of tensors does not require grad and does not "
                                   f"have a grad_fn")
            # the graph may be shared by the outputs: free it only after the last one
            _run_backward(out, _seed(out, go), bool(retain_graph) or k < last, store)
    result = []
    for t, g in zip(inputs, store.grads):
        if g is None:
            if not allow_unused:
                raise RuntimeError("One of the differentiated Tensors appears to not have been used "
                                   "in the graph. Set allow_unused=True if this is the desired behavior.")
            result.append(t.detach() * 0 if materialize_grads else None)
        else:
            result.append(Tensor._make(g, t._device, False, None))
    return tuple(result)


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """torch.autograd.backward: ``Tensor.backward`` on each tensor, gradients summed into ``.grad``."""
    tensors = _as_tuple(tensors)
    if grad_tensors is None:
        grad_tensors = (None,) * len(tensors)
    else:
        grad_tensors = _as_tuple(grad_tensors) if not isinstance(grad_tensors, Tensor) else (grad_tensors,)
    last = len(tensors) - 1
    for k, (t, g) in enumerate(zip(tensors, grad_tensors)):
        t.backward(g, retain_graph=bool(retain_graph) or k < last, create_graph=create_graph,
                   inputs=inputs)
