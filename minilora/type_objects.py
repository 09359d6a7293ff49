"""torch's type objects: ``torch.dtype`` (the class of every dtype) and ``torch.typename``.

minilora's dtypes are NumPy dtypes (``minilora.float32 is numpy.dtype("float32")``), so ``dtype`` here
is a class whose ``isinstance`` check accepts them: ``isinstance(minilora.float32, minilora.dtype)`` is
True, as a type annotation or a script's check expects. Like torch's, it cannot be called.
"""
import numpy as np

from .tensor import Tensor

__all__ = ["dtype", "typename"]


class _DtypeMeta(type):
    def __instancecheck__(cls, instance):
        return isinstance(instance, np.dtype)

    def __call__(cls, *args, **kwargs):
        raise TypeError("cannot create 'torch.dtype' instances")


class dtype(metaclass=_DtypeMeta):  # noqa: N801  (torch's name)
    """``torch.dtype``: ``isinstance(minilora.float32, minilora.dtype)`` (module docstring)."""


def typename(obj):
    """``torch.typename``: ``"torch.FloatTensor"`` for a float32 tensor (its ``type()``), the qualified
    class name for anything else (``"int"``, ``"minilora.nn.layers.Linear"``)."""
    if isinstance(obj, Tensor):
        return obj.type()
    if isinstance(obj, np.dtype):
        return "torch.dtype"  # (torch's answer for its dtypes: minilora's are NumPy's)
    module = getattr(obj, "__module__", "") or ""
    if hasattr(obj, "__qualname__"):
        qualname = obj.__qualname__
    elif hasattr(obj, "__name__"):
        qualname = obj.__name__
    else:
        module, qualname = type(obj).__module__ or "", type(obj).__qualname__
    return qualname if module in ("", "builtins") else f"{module}.{qualname}"
