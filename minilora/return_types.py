"""``minilora.return_types``: the named tuples ops return (torch's ``torch.return_types``):
``x.max(1)`` is ``(values, indices)``, ``aminmax`` ``(min, max)``, ``histogram`` ``(hist, bin_edges)``...

Each is a ``collections.namedtuple`` (fields by name, and a tuple to unpack), printed as torch prints
its own -- one field a line -- under this library's name, as ``minilora.Size`` is::

    minilora.return_types.max(
    values=tensor([3., 4.]),
    indices=tensor([1, 0]))

Every class is an attribute of this module, so pickle finds it (torch's pickle too).
"""
import collections

__all__ = ["make", "out_type"]


def make(name, fields, module=None, qualname=None):
    """The return type ``name`` with ``fields`` (one class per name). ``module``/``qualname``: where pickle
    finds a class kept elsewhere (linalg's results), else here under ``name``."""
    existing = globals().get(name)
    if module is None and isinstance(existing, type) and existing._fields == tuple(fields):
        return existing
    cls = collections.namedtuple(name, fields, module=module or __name__)
    cls.__repr__ = _repr
    if qualname is not None:
        cls.__qualname__ = qualname
    if module is None:
        globals()[name] = cls
    return cls


def out_type(result_type):
    """The return type of an op called with ``out=``: torch names it apart (``torch.max(x, 1, out=(v, i))`` is a
    ``torch.return_types.max_out``), with the same fields; kept here, where pickle finds it."""
    return make(result_type.__name__ + "_out", result_type._fields)


def _repr(self):
    body = ",\n".join(f"{field}={value!r}" for field, value in zip(self._fields, self))
    return f"minilora.return_types.{type(self).__name__}(\n{body})"
