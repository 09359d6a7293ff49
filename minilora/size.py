"""``Size``: what ``x.shape`` and ``x.size()`` return, torch's ``torch.Size``.

A shape is a tuple of ints, and ``Size`` *is* a tuple (a subclass), so everything a tuple does still
works: ``rows, cols = x.shape``, ``x.shape[-1]``, ``x.shape == (2, 3)``, ``np.zeros(x.shape)``,
hashing, ``len``. It adds what torch's adds: ``numel()`` (the number of elements a tensor of this
shape holds), and it stays a ``Size`` when sliced (``x.shape[1:]``), concatenated with a tuple
(``x.shape[:-1] + (4,)``) or repeated (``x.shape * 2``), as in torch.

As in torch it compares like a tuple: ``x.shape == (2, 3)`` is True, ``x.shape == [2, 3]`` is False
(a tuple never equals a list).

It prints as ``minilora.Size([2, 3])``. torch prints ``torch.Size([2, 3])``; we keep torch's form, so
a learner following a tutorial sees the output they expect, line for line, but name this library,
because the object is minilora's, not torch's (``type(x.shape).__module__`` says so too), and the
text is what you would type to make one again after ``import minilora``.
"""
import functools
import operator

__all__ = ["Size", "torch_spelling"]


class Size(tuple):
    """``minilora.Size([2, 3])``: a shape, a tuple of ints with ``numel()`` (torch.Size)."""

    __slots__ = ()

    def __new__(cls, sizes=()):
        return tuple.__new__(cls, [_as_int(i, size) for i, size in enumerate(sizes)])

    def numel(self):
        """The number of elements a tensor of this shape holds (the product of the sizes; 1 for
        ``Size([])``, a 0-d tensor). Not the number of dimensions: that is ``len(size)``."""
        n = 1
        for size in self:
            n *= size
        return n

    def __getitem__(self, index):
        item = tuple.__getitem__(self, index)
        return _from_tuple(item) if isinstance(index, slice) else item

    def __add__(self, other):
        # (a list raises TypeError, as tuple + list does, in torch too)
        return _from_tuple(tuple.__add__(self, other))

    def __radd__(self, other):  # (4,) + x.shape: Python asks the subclass first
        if not isinstance(other, tuple):
            return NotImplemented
        return _from_tuple(tuple.__add__(other, self))

    def __mul__(self, times):
        return _from_tuple(tuple.__mul__(self, times))

    __rmul__ = __mul__

    def __repr__(self):
        return f"minilora.Size({list(self)})"

    __str__ = __repr__

    def __reduce__(self):  # pickle/deepcopy give a Size back
        return (Size, (tuple(self),))


def torch_spelling(size):
    """A shape as torch's messages print one, ``torch.Size([2, 3])``: where minilora repeats a torch message word for
    word, a learner comparing the two sees torch's class named, not this library's."""
    return f"torch.Size({list(size)})"


def _as_int(i, size):
    """One size as an int: ints, bools, NumPy integers and 1-element integer tensors pass (torch takes
    them too); a float is torch's TypeError."""
    try:
        return operator.index(size)
    except TypeError:
        raise TypeError(f"minilora.Size() takes an iterable of 'int' (item {i} is "
                        f"'{type(size).__name__}')") from None


# A Size from a tuple already made of ints (an array's shape), skipping the checks: x.shape is read
# on every op's way, so it must cost no more than making a tuple.
_from_tuple = functools.partial(tuple.__new__, Size)
