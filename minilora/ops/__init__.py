"""Every differentiable op, one ``Function`` subclass each, grouped by family.

Lower-case wrappers (``minilora.ops.matmul(a, b)``) are the public names. They are also Tensor's
operators (``a @ b`` calls ``matmul(a, b)``) and, where PyTorch has them, its methods (``x.sum()``):
both are attached to ``Tensor`` below, so an operator costs no extra call on the way to its op.
"""
from ..tensor import Tensor
from .elementwise import (abs, add, astype, clone, div, erf, exp, gelu, log, masked_fill, mul, neg,
                          pow, relu, rsqrt, sigmoid, silu, sqrt, sub, tanh, to_device, unbroadcast,
                          where)
from .matmul import linear, matmul
from .lora import lora_dropout_mask, lora_linear
from .nn import (cross_entropy, dropout, embedding, layer_norm, rms_norm, rotary_embedding,
                 rotate_half, scaled_dot_product_attention, swiglu)
from .reduce import log_softmax, logsumexp, max, mean, softmax, sum, var
from .shape import (cat, chunk, expand, flatten, getitem, index_put, permute, reshape, split,
                    squeeze, stack, transpose, unsqueeze)


def _reflected(op):
    """The method behind ``2 - x``: Python calls ``x.__rsub__(2)``, which must compute ``sub(2, x)``."""
    def method(self, other):
        return op(other, self)
    return method


_METHODS = {
    "__add__": add, "__radd__": add, "__sub__": sub, "__rsub__": _reflected(sub), "__mul__": mul,
    "__rmul__": mul, "__truediv__": div, "__rtruediv__": _reflected(div), "__neg__": neg,
    "__pow__": pow, "__rpow__": _reflected(pow), "__matmul__": matmul,
    "__rmatmul__": _reflected(matmul), "__getitem__": getitem,
    "exp": exp, "log": log, "sqrt": sqrt, "rsqrt": rsqrt, "abs": abs, "tanh": tanh,
    "sigmoid": sigmoid, "relu": relu, "sum": sum, "mean": mean, "max": max, "var": var,
    "softmax": softmax, "log_softmax": log_softmax, "logsumexp": logsumexp, "matmul": matmul,
    "reshape": reshape, "view": reshape, "permute": permute, "transpose": transpose,
    "expand": expand, "split": split, "chunk": chunk, "squeeze": squeeze, "unsqueeze": unsqueeze,
    "flatten": flatten, "masked_fill": masked_fill, "pow": pow,
}
for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)


def _T(self):
    """Reverse all axes (``x.T``), as NumPy and PyTorch do for 2-D tensors."""
    return permute(self, tuple(reversed(range(self.ndim))))


Tensor.T = property(_T)


def argmax(a, axis=None, dim=None, keepdims=False):
    """Indices of the maxima (an integer tensor outside the graph)."""
    axis = dim if dim is not None else axis
    return Tensor._make(a._array.argmax(axis=axis, keepdims=keepdims), a.device, False, None)


Tensor.argmax = argmax
