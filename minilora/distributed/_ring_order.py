"""The order torch's gloo backend adds the ranks' numbers in, so an all-reduce over MPI gives gloo's bits.

Floating-point addition is not associative: with three ranks, ``(a + b) + c`` and ``a + (b + c)`` can
differ in the last bit, and MPI's reduction order is the MPI library's business. torch's CPU backend,
gloo, all-reduces a buffer with its *ring* algorithm (``gloo/allreduce.cc``, ``ring()``):

* the buffer is cut into ``2 p`` segments (p ranks; more, a multiple of p, when a segment would pass
  ``kMaxSegmentSize`` = 1 MiB), each a whole number of elements, the last ones short or empty; rank c
  ends up owning *chunk* c, segments ``[c s, (c + 1) s)`` with s segments a rank;
* a chunk's partial sum travels the ring downwards: chunk c starts at rank c - 1, which sends its
  numbers to rank c - 2, which adds its own and sends on, ..., until rank c adds its numbers last.

So chunk c's sum is ``((x[c-1] + x[c-2]) + x[c-3]) + ... + x[c]`` (ranks modulo p), each addition
rounded to the buffer's dtype (16-bit floats too: gloo's float16 adds in float and rounds each step).
With one or two ranks there is one order only. ``ring_ordered_sum`` computes this from every rank's
buffer; ``ReduceOp.PRODUCT`` multiplies in the same order.

gloo's ``reduce`` runs the same ring (its segments sized from ``2 p`` first, then capped at 1 MiB: the
same cut below 2 p MiB) and sends each chunk to the root; torch's ``reduce_scatter_tensor`` over gloo is
an all-reduce of the whole input, each rank keeping its piece, and ``reduce_scatter`` of a list reduces
each rank's piece as a buffer of its own.
"""
import numpy as np

from .. import dtypes

MAX_SEGMENT_BYTES = 1024 * 1024  # gloo's AllreduceOptionsImpl::kMaxSegmentSize


def _round_up(value, multiple):
    return value + (-value) % multiple


def chunk_bounds(elements, itemsize, ranks, reduce=False):
    """``[(start, stop), ...]``: the elements of chunk c (rank c's) of a buffer of ``elements`` numbers
    of ``itemsize`` bytes, as gloo's ring cuts it (``reduce``: as its reduce does)."""
    total = elements * itemsize
    max_segment = itemsize * max(1, MAX_SEGMENT_BYTES // itemsize)
    if reduce:  # the segment's size first (2 a rank, at most 1 MiB), then how many
        segment_bytes = _round_up(min(-(-total // (2 * ranks)), max_segment), itemsize)
        segments = _round_up(max(-(-total // segment_bytes), 2 * ranks), ranks)
    else:  # how many segments first (2 a rank, more to stay under 1 MiB), then their size
        segments = _round_up(max(-(-total // max_segment), 2 * ranks), ranks)
        segment_bytes = _round_up(-(-total // segments), itemsize)
    chunk_bytes = segment_bytes * (segments // ranks)
    return [(min(c * chunk_bytes, total) // itemsize, min((c + 1) * chunk_bytes, total) // itemsize)
            for c in range(ranks)]


def ring_ordered_sum(gathered, dtype, multiply=False, offset=0, total=None, reduce=False):
    """The reduction of ``gathered`` [ranks, n] (every rank's numbers) in gloo's ring order, each step
    rounded to ``dtype`` (the buffer's own dtype; ``gathered`` may hold it widened to float32). The numbers
    are elements ``offset`` to ``offset + n`` of a buffer of ``total`` (all of it by default)."""
    ranks, n = gathered.shape
    total = n if total is None else total
    combine = np.multiply if multiply else np.add
    out = np.empty(n, gathered.dtype)
    for c, (start, stop) in enumerate(chunk_bounds(total, np.dtype(dtype).itemsize, ranks, reduce)):
        start, stop = max(start, offset) - offset, min(stop, offset + n) - offset  # the part among ours
        if start >= stop:
            continue
        acc = gathered[(c - 1) % ranks, start:stop].copy()
        for step in range(2, ranks + 1):  # ranks c-2, c-3, ..., c: each adds its numbers to what it received
            acc = _rounded(combine(gathered[(c - step) % ranks, start:stop], acc), dtype)
        out[start:stop] = acc
    return out


def _rounded(values, dtype):
    """``values`` rounded to ``dtype`` and kept in their own array dtype (a 16-bit buffer travels widened)."""
    dtype = np.dtype(dtype)
    if values.dtype == dtype:
        return values
    return dtypes.cast(values, dtype).astype(values.dtype)
