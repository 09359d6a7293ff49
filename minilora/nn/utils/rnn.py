"""``minilora.nn.utils.rnn``: batching sequences of different lengths, as ``torch.nn.utils.rnn``.

``pad_sequence`` stacks them into one padded tensor; ``unpad_sequence`` cuts them out again.
``pack_padded_sequence`` / ``pack_sequence`` make torch's ``PackedSequence``: the sequences sorted
longest first, then time step by time step the rows of the sequences still running (``data``
[sum of lengths, *], ``batch_sizes`` [longest length], the sort's ``sorted_indices`` and its inverse
``unsorted_indices``). ``RNN``, ``GRU`` and ``LSTM`` run on it as torch's do (each step on the rows still
running, a sequence's last state taken at its own length) and answer a ``PackedSequence``;
``pad_packed_sequence`` / ``unpack_sequence`` turn one back into a padded tensor in the caller's order.
"""
from typing import NamedTuple

from ... import dtypes, factories, ops
from ...tensor import Tensor, tensor

__all__ = ["pad_sequence", "unpad_sequence", "pack_padded_sequence", "pad_packed_sequence",
           "pack_sequence", "unpack_sequence", "PackedSequence", "invert_permutation"]


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Stack ``sequences`` (tensors of shape ``[L_i, *]``) into ``[L_max, B, *]`` (``[B, L_max, *]``
    with ``batch_first``), filling with ``padding_value`` after each sequence (``padding_side='left'``:
    before it). As torch: the result has the first sequence's dtype and trailing shape (the others are
    converted into it), and the gradient flows back to every sequence."""
    if padding_side not in ("left", "right"):
        raise RuntimeError(f"Expected padding_side to be one of left or right, but got {padding_side}.")
    try:
        sequences = tuple(sequences)
    except TypeError:
        raise RuntimeError(f"pad_sequence: Expected iterable for input sequences, but got arg of type: "
                           f"{type(sequences)}") from None
    if not sequences:
        raise RuntimeError("received an empty list of sequences")
    first = sequences[0]
    longest = max(len(s) for s in sequences)
    out = factories.full((len(sequences), longest) + tuple(first.shape[1:]), padding_value,
                         dtype=first.dtype, device=first.device)
    for i, seq in enumerate(sequences):
        start = 0 if padding_side == "right" else longest - len(seq)
        out[i, start:start + len(seq)] = seq  # (in the graph when seq requires grad: index_put)
    return out if batch_first else out.transpose(0, 1)


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """The list of sequences ``pad_sequence`` padded, cut to ``lengths``. As torch, a time-first
    ``padded_sequences`` is transposed *in place* (the caller's tensor is left ``[B, L, *]``)."""
    if not batch_first:
        padded_sequences.transpose_(0, 1)
    lengths = lengths.tolist() if isinstance(lengths, Tensor) else list(lengths)
    return [seq[:int(n)] for seq, n in zip(padded_sequences, lengths)]


class PackedSequence(NamedTuple):
    """torch's ``PackedSequence`` (a named tuple): make it with ``pack_padded_sequence`` or
    ``pack_sequence``. ``to()`` and the dtype methods convert ``data`` (and move the indices with it);
    ``batch_sizes`` stays an int64 CPU tensor."""
    data: Tensor
    batch_sizes: Tensor
    sorted_indices: Tensor = None
    unsorted_indices: Tensor = None

    def to(self, *args, **kwargs):
        data = self.data.to(*args, **kwargs)
        if data is self.data:
            return self
        move = lambda t: None if t is None else t.to(data.device)  # noqa: E731
        return PackedSequence(data, self.batch_sizes, move(self.sorted_indices), move(self.unsorted_indices))

    def cpu(self):
        return self.to("cpu")

    def cuda(self, *args, **kwargs):
        return self.to("cuda")

    def double(self):
        return self.to(dtype=dtypes.float64)

    def float(self):
        return self.to(dtype=dtypes.float32)

    def half(self):
        return self.to(dtype=dtypes.float16)

    def long(self):
        return self.to(dtype=dtypes.int64)

    def int(self):
        return self.to(dtype=dtypes.int32)

    def short(self):
        return self.to(dtype=dtypes.int16)

    def char(self):
        return self.to(dtype=dtypes.int8)

    def byte(self):
        return self.to(dtype=dtypes.uint8)

    @property
    def is_cuda(self):
        return self.data.is_cuda

    def is_pinned(self):
        return False


def invert_permutation(permutation):
    """The permutation that undoes ``permutation`` (None stays None)."""
    if permutation is None:
        return None
    inverse = factories.empty_like(permutation)
    inverse[permutation] = tensor(list(range(len(permutation))))
    return inverse


def _lengths_list(lengths, batch):
    """``lengths`` (a list or a tensor, any integer or float dtype, as torch takes) as Python ints,
    checked as ATen's ``_pack_padded_sequence`` checks them."""
    if isinstance(lengths, Tensor):
        if lengths.ndim != 1:
            raise RuntimeError(f"'lengths' argument should be a 1D CPU int64 tensor, but got {lengths.ndim}D cpu "
                               f"Long tensor")
        lengths = lengths.tolist()
    lengths = [int(n) for n in lengths]
    if len(lengths) != batch:
        raise RuntimeError(f"Expected `len(lengths)` to be equal to batch_size, but got {len(lengths)} "
                           f"(batch_size={batch})")
    return lengths


def _packed_rows(lengths, steps, batch):
    """The rows of a padded [steps * batch, *] tensor (time first) that a PackedSequence keeps, in its
    order: step by step, the sequences still running (lengths sorted longest first)."""
    return [t * batch + b for t in range(steps) for b in range(batch) if lengths[b] > t]


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """A padded batch [T, B, *] (``batch_first``: [B, T, *]) and each sequence's length -> a
    ``PackedSequence``. ``enforce_sorted=False`` sorts the sequences longest first itself (and keeps the
    order to undo it); otherwise ``lengths`` must already be in decreasing order. Differentiable."""
    batch_dim = 0 if batch_first else 1
    lengths = _lengths_list(lengths, input.shape[batch_dim])
    sorted_indices = None
    if enforce_sorted:
        if any(a < b for a, b in zip(lengths, lengths[1:])):
            raise RuntimeError("`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. "
                               "You can pass `enforce_sorted=False` to pack_padded_sequence and/or pack_sequence "
                               "to sidestep this requirement if you do not need ONNX exportability.")
    else:
        ordered, sorted_indices = ops.sort(tensor(lengths), descending=True)
        lengths = ordered.tolist()
        input = input.index_select(batch_dim, sorted_indices)
    if lengths[-1] <= 0:
        raise RuntimeError("Length of all samples has to be greater than 0, but found an element in 'lengths' "
                           "that is <= 0")
    if batch_first:
        input = input.transpose(0, 1)
    steps, batch = input.shape[0], input.shape[1]
    if lengths[0] > steps:
        raise RuntimeError(f"pack_padded_sequence: a length of {lengths[0]} in a batch of {steps} time steps")
    rows = tensor(_packed_rows(lengths, steps, batch))
    data = input.reshape((steps * batch,) + tuple(input.shape[2:]))[rows]
    batch_sizes = tensor([sum(n > t for n in lengths) for t in range(lengths[0])])
    return PackedSequence(data, batch_sizes, sorted_indices, invert_permutation(sorted_indices))


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """A ``PackedSequence`` -> ``(padded, lengths)``: the batch [T, B, *] (``batch_first``: [B, T, *]),
    ``padding_value`` after each sequence, T the longest length (or ``total_length``), in the order the
    sequences were given; ``lengths`` an int64 tensor. Differentiable."""
    data, batch_sizes = sequence.data, sequence.batch_sizes.tolist()
    steps = len(batch_sizes)
    if total_length is not None:
        if total_length < steps:
            raise ValueError(f"Expected total_length to be at least the length of the longest sequence in input, "
                             f"but got total_length={total_length} and max sequence length being {steps}")
        steps = total_length
    batch = batch_sizes[0]
    lengths = [sum(size > b for size in batch_sizes) for b in range(batch)]
    padded = factories.full((steps * batch,) + tuple(data.shape[1:]), padding_value, dtype=data.dtype,
                            device=data.device)
    padded[tensor(_packed_rows(lengths, steps, batch))] = data  # (in the graph: index_put)
    padded = padded.reshape((steps, batch) + tuple(data.shape[1:]))
    if batch_first:
        padded = padded.transpose(0, 1)
    lengths = tensor(lengths)
    if sequence.unsorted_indices is not None:
        padded = padded.index_select(0 if batch_first else 1, sequence.unsorted_indices)
        lengths = lengths[sequence.unsorted_indices]
    return padded, lengths


def pack_sequence(sequences, enforce_sorted=True):
    """A list of sequences [L_i, *] -> a ``PackedSequence`` (``pad_sequence``, then ``pack_padded_sequence``)."""
    lengths = tensor([len(v) for v in sequences])
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences):
    """A ``PackedSequence`` -> the list of its sequences, in the order they were packed."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)
