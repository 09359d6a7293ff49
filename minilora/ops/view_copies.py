"""torch's ``*_copy`` twins of the view ops, and the ``unsafe_`` spellings of split and chunk.

``torch.t_copy(x)`` is ``x.t()`` as a new contiguous tensor: torch generates one such twin per view op
(for backends that cannot alias memory), and its OpInfo database tests them as ops of their own. Each
twin here runs the view op and copies the result (a tuple result element by element); the gradient is
the view op's, through a copy, and the node is named as torch's (``TBackward0_copy``).

``torch.unsafe_split`` / ``unsafe_chunk`` / ``unsafe_split_with_sizes`` are split / chunk whose pieces
torch does not track as views of the input (an in-place change of one is not checked against the
others). minilora's pieces are the same values with the same gradients.
"""
import inspect

from ..factories import contiguous_format
from ..tensor import Tensor, name_node, no_complex_autograd, share_node
from . import shape as S

__all__ = ["alias_copy", "as_strided_copy", "diagonal_copy", "expand_copy", "permute_copy", "select_copy",
           "slice_copy", "split_copy", "split_with_sizes_copy", "squeeze_copy", "t_copy", "transpose_copy",
           "unbind_copy", "unfold_copy", "unsqueeze_copy", "view_copy", "unsafe_split", "unsafe_chunk",
           "unsafe_split_with_sizes", "copy_twin"]


def _copied(view, input):
    """A view op's result as new contiguous tensors, each node named as the view's with ``_copy``."""
    if isinstance(view, (tuple, list)):  # (split_copy's pieces: torch's one node, as split's)
        return share_node(tuple(_copied(piece, input) for piece in view))
    copy = view.clone(memory_format=contiguous_format)
    if view is input or view.grad_fn is None:  # (the op handed the input back: no view node to name after)
        return copy
    return name_node(copy, view.grad_fn.name() + "_copy", input)  # (torch's one node: the input's edge)


# the twins torch has no complex derivative for (the others' derivatives take complex gradients)
_REAL_AUTOGRAD_ONLY = {"select_copy", "slice_copy"}


def copy_twin(view_op, name):
    """``name`` (``torch.t_copy``): ``view_op``'s arguments, its result copied."""
    def twin(input, *args, **kwargs):
        view = view_op(input, *args, **kwargs)
        if name in _REAL_AUTOGRAD_ONLY:
            no_complex_autograd(name, view.dtype, input)
        return _copied(view, input)
    twin.__name__ = twin.__qualname__ = name
    twin.__signature__ = inspect.signature(view_op)  # (the argument checks read the view's parameters: size, ...)
    twin.__doc__ = f"``torch.{name}``: ``torch.{name[:-len('_copy')]}``'s result as a new contiguous tensor."
    return twin


def _slice(input, dim=0, start=None, end=None, step=1):
    """``input[..., start:end:step]`` along ``dim`` (torch.ops.aten.slice, whose twin is torch.slice_copy)."""
    (axis,) = S._dims((dim,), input.ndim)
    if step <= 0:
        raise RuntimeError("slice step must be positive")
    return input[(slice(None),) * axis + (slice(start, end, step),)]


as_strided_copy = copy_twin(S.as_strided, "as_strided_copy")
diagonal_copy = copy_twin(S.diagonal, "diagonal_copy")
expand_copy = copy_twin(lambda input, size, *, implicit=False: S.expand(input, size), "expand_copy")
permute_copy = copy_twin(S.permute, "permute_copy")
select_copy = copy_twin(S.select, "select_copy")
slice_copy = copy_twin(_slice, "slice_copy")
split_copy = copy_twin(S.split, "split_copy")
split_with_sizes_copy = copy_twin(S.split_with_sizes, "split_with_sizes_copy")
squeeze_copy = copy_twin(S.squeeze, "squeeze_copy")
t_copy = copy_twin(lambda input: input.t(), "t_copy")
transpose_copy = copy_twin(S.transpose, "transpose_copy")
unbind_copy = copy_twin(S.unbind, "unbind_copy")
unfold_copy = copy_twin(S.unfold, "unfold_copy")
unsqueeze_copy = copy_twin(S.unsqueeze, "unsqueeze_copy")
view_copy = copy_twin(S.view, "view_copy")


def alias_copy(input):
    """``torch.alias_copy``: a new contiguous tensor with ``input``'s values (torch.alias's twin)."""
    return name_node(input.clone(memory_format=contiguous_format), "AliasBackward0_copy", input)


def unsafe_split(tensor, split_size_or_sections, dim=0):
    """``torch.unsafe_split``: ``split``'s pieces (torch does not track them as views)."""
    return _named_pieces(S.split(tensor, split_size_or_sections, dim), tensor, "UnsafeSplitBackward0")


def unsafe_chunk(input, chunks, dim=0):
    """``torch.unsafe_chunk``: ``chunk``'s pieces (torch does not track them as views)."""
    return _named_pieces(S.chunk(input, chunks, dim), input, "UnsafeSplitBackward0")


def unsafe_split_with_sizes(input, split_sizes, dim=0):
    """``torch.unsafe_split_with_sizes``: ``split_with_sizes``'s pieces."""
    return _named_pieces(S.split_with_sizes(input, split_sizes, dim), input, "UnsafeSplitWithSizesBackward0")


def _named_pieces(pieces, input, name):
    """Each piece's node named as torch's node for the unsafe form (the input's one edge, as split's)."""
    for piece in pieces:
        name_node(piece, name, input)
    return share_node(pieces)


for _name in ("unsafe_split", "unsafe_chunk", "unsafe_split_with_sizes"):  # (torch's Tensor methods too)
    setattr(Tensor, _name, globals()[_name])
