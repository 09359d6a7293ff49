"""``minilora.nn.utils.rnn``: batching sequences of different lengths, as ``torch.nn.utils.rnn``.

``pad_sequence`` stacks them into one padded tensor (what minilora's ``RNN``, ``GRU`` and ``LSTM``
take); ``unpad_sequence`` cuts them out again. minilora's RNNs take no ``PackedSequence``, so the
packing functions refuse with an error instead of returning something they could not run on.
"""
from ... import factories
from ...tensor import Tensor

__all__ = ["pad_sequence", "unpad_sequence", "pack_padded_sequence", "pad_packed_sequence",
           "pack_sequence", "unpack_sequence", "PackedSequence"]


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


def _no_packing(name):
    def refuse(*args, **kwargs):
        raise NotImplementedError(
            f"{name}: minilora has no PackedSequence (its RNN, GRU and LSTM take padded batches only). "
            f"Pass the tensor from pad_sequence and ignore the outputs past each sequence's length.")
    refuse.__name__ = name
    return refuse


pack_padded_sequence = _no_packing("pack_padded_sequence")
pad_packed_sequence = _no_packing("pad_packed_sequence")
pack_sequence = _no_packing("pack_sequence")
unpack_sequence = _no_packing("unpack_sequence")
PackedSequence = _no_packing("PackedSequence")
