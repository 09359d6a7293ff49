"""``torch.save(model)``: a whole module (or any object only pickle can store) pickled, as torch pickles it.

torch.save pickles the object; its tensors are rebuilt from their storages when the file is loaded.
minilora writes a marker line and a pickle stream (protocol 2, torch's default) in which each Tensor or
Parameter is its values, its ``requires_grad`` and its device, rebuilt by ``_rebuilt_tensor`` (no graph
and no ``.grad`` travel, as with torch). Loading runs the pickle, which may run any code the file holds:
as in torch 2.6+, all of it only with ``weights_only=False``; the default (weights-only) loads a pickle that
imports nothing but what tensors, arrays and plain containers need, and refuses any other with torch's
UnpicklingError, naming the first class it would have had to import.
"""
import contextlib
import io
import pickle
import threading
import weakref

import numpy as np

from . import dtypes
from .tensor import Tensor
from .torch_format import unsupported_global, user_globals, weights_only_message

__all__ = ["save", "load", "is_pickled"]

MAGIC = b"minilora.save pickle v1\n"

# what a tensor's own rebuild needs: a weights-only loader would not have to import anything else for it
_OWN_GLOBALS = {f"{__name__} _rebuilt_tensor", "minilora.tensor Tensor", "minilora.nn.module Parameter",
                "minilora.nn.module Buffer", "_codecs encode", "__builtin__ bytes", "builtins bytes",
                "numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype", "numpy.core.multiarray scalar",
                "numpy._core.multiarray _reconstruct", "numpy._core.multiarray scalar", "copy_reg _reconstructor",
                "__builtin__ object", "collections OrderedDict", "__builtin__ set", "builtins set"}

_loading = threading.local()  # the load in progress: where each rebuilt tensor goes (map_location)


def _extra_slots(t):
    """A Tensor subclass's own slot values (nn.Buffer's ``persistent``) and instance dict."""
    extra = {}
    for klass in type(t).__mro__:
        if klass is Tensor or not issubclass(klass, Tensor):
            continue
        for name in getattr(klass, "__slots__", ()):
            if hasattr(t, name):
                extra[name] = getattr(t, name)
    extra.update(getattr(t, "__dict__", {}))
    return extra


def _rebuilt_tensor(cls, data, dtype_name, shape, requires_grad, device, extra):
    """A tensor of class ``cls`` holding ``data`` (its bytes, of the dtype named) on ``device`` (or where the
    load's map_location puts it)."""
    array = np.frombuffer(data, dtype=dtypes.to_dtype(dtype_name)).reshape(shape).copy()
    tensor = Tensor(array, dtype=array.dtype, device="cpu")
    placed = getattr(_loading, "placed", None)
    tensor = placed(tensor, device) if placed else tensor.to(device)
    rebuilt = object.__new__(cls)
    for name in Tensor.__slots__:
        if name != "__weakref__":
            object.__setattr__(rebuilt, name, getattr(tensor, name))
    rebuilt.requires_grad = requires_grad
    for name, value in extra.items():
        object.__setattr__(rebuilt, name, value)
    return rebuilt


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, weakref.ReferenceType):  # (a PEFT model's back-reference to its wrapper): a weak
            return weakref.ref, (obj(),)  # reference to the same object again (pickle cannot store one)
        if isinstance(obj, Tensor):
            # its bytes and dtype name, not a NumPy array: a bfloat16 array would make the pickle import
            # ml_dtypes, which the weights-only load refuses (torch stores the bytes beside its pickle)
            values = obj.detach().numpy(force=True).copy(order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
            return _rebuilt_tensor, (type(obj), values.tobytes(), values.dtype.name, values.shape,
                                     bool(obj.requires_grad), obj.device.name, _extra_slots(obj))
        return NotImplemented


def save(obj, path, protocol=2):
    """Pickle ``obj`` into ``path`` (atomically: a crash leaves the old file)."""
    from .checkpoint import atomic_write
    with atomic_write(path, "wb") as file:
        file.write(MAGIC)
        _Pickler(file, protocol=protocol).dump(obj)


def is_pickled(path):
    with open(path, "rb") as file:
        return file.read(len(MAGIC)) == MAGIC


class _WeightsOnlyUnpickler(pickle.Unpickler):
    """torch's default (weights-only) load: a pickle that imports only what tensors, arrays and plain
    containers need loads; the first other global (a module's class) is refused in torch's words."""

    def find_class(self, module, name):
        allowed_by_user = user_globals().get(f"{module}.{name}")
        if allowed_by_user is not None:  # (torch.serialization.add_safe_globals)
            return allowed_by_user
        if f"{module} {name}" not in _OWN_GLOBALS:
            raise _weights_only_error(name if module in ("builtins", "__builtin__") else f"{module}.{name}")
        return super().find_class(module, name)


def _weights_only_error(name):
    return pickle.UnpicklingError(weights_only_message(unsupported_global(name)))


@contextlib.contextmanager
def _placing(placed):
    _loading.placed = placed
    try:
        yield
    finally:
        _loading.placed = None


def load(path, trusted, placed):
    """The object pickled in ``path``; ``trusted`` is torch.load's ``weights_only=False``, without which the
    pickle is not run. ``placed(tensor, saved_device)`` puts each tensor where map_location says."""
    with open(path, "rb") as file:
        data = file.read()[len(MAGIC):]
    with _placing(placed):
        if trusted:
            return pickle.loads(data)
        return _WeightsOnlyUnpickler(io.BytesIO(data)).load()
