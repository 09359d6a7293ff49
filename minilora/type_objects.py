"""torch's type objects: ``torch.dtype`` (the class of every dtype) and ``torch.typename``.

minilora's dtypes are NumPy dtypes (``minilora.float32 is numpy.dtype("float32")``), so ``dtype`` here
is a class whose ``isinstance`` check accepts them: ``isinstance(minilora.float32, minilora.dtype)`` is
True, as a type annotation or a script's check expects. Like torch's, it cannot be called.
"""
import numpy as np

from . import dtypes
from .ops import _TENSOR_TYPE_NAMES
from .tensor import Tensor, legacy_device

__all__ = ["dtype", "typename", "FloatTensor", "DoubleTensor", "HalfTensor", "BFloat16Tensor", "ByteTensor",
           "CharTensor", "ShortTensor", "IntTensor", "LongTensor", "BoolTensor"]


class _DtypeMeta(type):
    def __instancecheck__(cls, instance):
        return isinstance(instance, np.dtype)

    def __call__(cls, *args, **kwargs):
        raise TypeError("cannot create 'torch.dtype' instances")


class dtype(metaclass=_DtypeMeta):  # noqa: N801  (torch's name)
    """``torch.dtype``: ``isinstance(minilora.float32, minilora.dtype)`` (module docstring)."""


class _TensorType(type):
    """torch's legacy tensor types (``torch.LongTensor`` ...: class ``torch.tensortype``). Calling one is
    the legacy constructor in that dtype: ``LongTensor([1, 2])`` from data, ``FloatTensor(2, 3)`` of a
    size (zeros here; torch leaves it uninitialised), ``FloatTensor(t)`` the same storage when ``t``
    has the dtype. ``isinstance(t, torch.FloatTensor)`` holds for a float32 CPU tensor."""

    def __instancecheck__(cls, obj):
        return isinstance(obj, Tensor) and obj.dtype == cls.dtype and obj.device.type == "cpu"

    def __call__(cls, *data, device=None):
        if len(data) == 1 and isinstance(data[0], Tensor) and data[0].dtype != cls.dtype:
            raise TypeError(f"expected {cls.__name__}'s dtype {cls.dtype} (got {data[0].dtype}): "
                            f"convert with t.to(torch.{cls.dtype})")
        return Tensor(*data, dtype=cls.dtype, device=legacy_device(data, device))

    def __repr__(cls):
        return f"<class 'torch.{cls.__name__}'>"


class _BFloat16TensorType(_TensorType):
    """``torch.BFloat16Tensor``, whose dtype is looked up when first used: it imports ml_dtypes, which
    ``import minilora`` does not pay for (dtypes.py)."""

    @property
    def dtype(cls):
        return dtypes.bfloat16


def _tensor_type(dtype_name, name):
    if dtype_name == "bfloat16":
        if not dtypes.HAS_BFLOAT16:
            return None  # (no ml_dtypes installed)
        return _BFloat16TensorType(name, (), {"__module__": "minilora"})
    return _TensorType(name, (), {"dtype": getattr(dtypes, dtype_name), "__module__": "minilora"})


_TYPES = {name: _tensor_type(dtype_name, name) for dtype_name, name in _TENSOR_TYPE_NAMES.items()}
(FloatTensor, DoubleTensor, HalfTensor, BFloat16Tensor, ByteTensor, CharTensor, ShortTensor, IntTensor, LongTensor,
 BoolTensor) = (_TYPES[name] for name in __all__[2:])


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


_warned_deprecated = []


def set_default_tensor_type(t):
    """``torch.set_default_tensor_type(torch.DoubleTensor)`` (or its name, ``"torch.DoubleTensor"``): the
    default dtype becomes the type's, with torch's deprecation warning (once, as ATen's). Only floating types;
    the ``torch.cuda.*`` legacy types are not minilora's (``set_default_device("cuda")`` is)."""
    import warnings
    if not _warned_deprecated:
        _warned_deprecated.append(True)
        warnings.warn("torch.set_default_tensor_type() is deprecated as of PyTorch 2.1, please use "
                      "torch.set_default_dtype() and torch.set_default_device() as alternatives.",
                      UserWarning, stacklevel=2)
    if isinstance(t, str):
        t = _tensor_type_named(t)
    if not isinstance(t, _TensorType):
        raise TypeError("invalid type object: only floating-point types are supported as the default type")
    if not dtypes.is_floating(t.dtype):
        raise TypeError("only floating-point types are supported as the default type")
    dtypes.set_default_dtype(t.dtype)


def _tensor_type_named(name):
    module, _, type_name = name.rpartition(".")
    if module in ("torch", "minilora") and type_name in _TYPES:
        return _TYPES[type_name]
    if module in ("torch.cuda", "minilora.cuda"):
        raise TypeError(f"type {name} not available: minilora has no legacy CUDA tensor types "
                        f"(torch.set_default_dtype() and torch.set_default_device('cuda') are its alternatives)")
    raise ModuleNotFoundError(f"No module named '{name}'")
