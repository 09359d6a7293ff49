"""``torch.nn.parameter``, where torch's own code and older tutorials import from (``from torch.nn.parameter
import Parameter``): the same classes as ``minilora.nn``'s."""
from .lazy import UninitializedBuffer, UninitializedParameter, _Uninitialized as UninitializedTensorMixin
from .module import Buffer, Parameter

__all__ = ["Parameter", "Buffer", "UninitializedParameter", "UninitializedBuffer", "UninitializedTensorMixin",
           "is_lazy"]


def is_lazy(param):
    """torch's: whether ``param`` has no shape yet (a Lazy module's, before its first call)."""
    return isinstance(param, UninitializedTensorMixin)
