"""PowerSGD (Vogels et al., 2019): DDP's gradients all-reduced as low-rank factors, as torch's hooks do.

    from minilora.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powerSGD
    state = powerSGD.PowerSGDState(process_group=None, matrix_approximation_rank=1, start_powerSGD_iter=10)
    model.register_comm_hook(state, powerSGD.powerSGD_hook)

The idea: a gradient matrix M (n x m) is sent as two thin matrices, P = M Q (n x r) and Q = M^T P (m x r),
so r (n + m) numbers cross the network instead of n m. One step of power iteration finds them:

    Q <- orthogonalize(Q)            # a random start the first time, last step's Q after ("warm start")
    P <- all_reduce(M Q)             # sum of every rank's M Q: (sum M) Q
    P <- orthogonalize(P)
    Q <- all_reduce(M^T P) / ranks   # the mean M's projection
    M <- P Q^T                       # every rank gets the same rank-r approximation of the mean gradient

What the approximation drops is kept per rank ("error feedback") and added to the next step's gradient,
so nothing is lost for good. Tensors that would not shrink enough (biases, small matrices:
``min_compression_rate``) are all-reduced as they are. The first ``start_powerSGD_iter`` iterations
are a plain all-reduce (DDP rebuilds its buckets after the first one, and early training is fragile).

Bits: every step is torch's in torch's order (its seeds: a NumPy ``RandomState`` picks a seed per
draw, torch's generator draws Q; Gram-Schmidt for rank <= 2, QR above; torch's small-bmm loop for
the products; the all-reduces in gloo's order), so the gradients are torch's over gloo, whatever the
number of ranks; a product of 400 multiply-adds a matrix or more goes to BLAS where torch calls MKL,
and QR is LAPACK's: equal to rounding there. The hook runs its all-reduces before it returns (torch
chains them on gloo's threads, where several buckets in flight can deadlock): the same numbers.

torch 2.13's own ``batched_powerSGD_hook`` hands its 2-D Q to the batched ``_orthogonalize`` and fails its
assertion at the first compressed step; minilora's runs the hook as torch documents it (a batch of one).
"""
import logging
import math

import numpy as np

from .... import linalg
from ....factories import empty, randn, zeros
from ....futures import Future
from ....ops.matmul import bmm, matmul
from ....ops.shape import cat, stack
from ....random import Generator
from ....tensor import no_grad
from ... import _require_group, all_reduce, group
from . import default_hooks as default

__all__ = ["PowerSGDState", "powerSGD_hook", "batched_powerSGD_hook"]

logger = logging.getLogger(__name__)


# ---- orthogonalizing the columns of a batch of matrices -------------------------------------------
def _orthogonalize(matrices, epsilon=0):
    """In place, each matrix of ``matrices`` [batch, n, r] (r <= n) gets orthonormal columns: Gram-Schmidt
    for r <= 2 and in 16 bits (torch's choice: QR has no half-precision kernel), QR otherwise."""
    if not (matrices.ndim == 3 and matrices.shape[2] <= matrices.shape[1]):
        raise AssertionError
    rank = matrices.shape[2]
    if rank <= 2 or str(matrices.dtype) in ("float16", "bfloat16"):
        _orthogonalize_gram_schmidt(matrices, epsilon)
    else:
        matrices.copy_(linalg.qr(matrices)[0])


def _orthogonalize_gram_schmidt(matrices, epsilon=0):
    """Column by column: normalize it (plus ``epsilon`` in the norm, against an all-zero column: 0/0 is NaN
    otherwise), then take its component out of the columns after it."""
    columns = matrices.shape[2]
    for i in range(columns):
        col = matrices[:, :, i:i + 1]
        norm = col.norm(dim=1, keepdim=True)
        col.div_(norm if epsilon == 0 else norm + epsilon)
        if i + 1 < columns:
            rest = matrices[:, :, i + 1:]
            rest.sub_((col * rest).sum(dim=1, keepdim=True) * col)


def _should_compress(num_rows, num_cols, matrix_approximation_rank, min_compression_rate):
    """(worth it, numbers before, numbers after): compress when the factors are ``min_compression_rate``
    times smaller than the matrix."""
    uncompressed = num_rows * num_cols
    compressed = (num_rows + num_cols) * matrix_approximation_rank
    return compressed * min_compression_rate < uncompressed, uncompressed, compressed


def _report_compression_stats(bucket, state):
    if bucket.is_last() and state.iter >= state.next_stats_report:
        rate, before, after = state.compression_stats()
        logger.info("Compression stats: iter %s, total before compression %s, total after compression %s, "
                    "rate %s", state.iter, before, after, rate)
        state.next_stats_report = state.iter + state.compression_stats_logging_frequency


# ---- the state --------------------------------------------------------------------------------------
class PowerSGDState:
    """torch's ``PowerSGDState``: the hyperparameters, and what carries over between iterations (each
    bucket's error, P and Q, the seed generator, the iteration count). Pickled into checkpoints without
    its process group (``__getstate__``); unpickled onto the default group."""

    __slots__ = ["process_group", "matrix_approximation_rank", "start_powerSGD_iter", "min_compression_rate",
                 "orthogonalization_epsilon", "use_error_feedback", "warm_start", "batch_tensors_with_same_shape",
                 "rng", "error_dict", "p_memory_dict", "q_memory_dict", "iter", "total_numel_before_compression",
                 "total_numel_after_compression", "compression_stats_logging_frequency", "next_stats_report"]

    def __init__(self, process_group, matrix_approximation_rank=1, start_powerSGD_iter=1_000,
                 min_compression_rate=2, use_error_feedback=True, warm_start=True, orthogonalization_epsilon=0,
                 random_seed=0, compression_stats_logging_frequency=10_000, batch_tensors_with_same_shape=False):
        logger.info("PowerSGD config: matrix_approximation_rank = %s; start_powerSGD_iter = %s; min_compression_rate = "
                    "%s; orthogonalization_epsilon = %s; use_error_feedback = %s; warm_start = %s; random_seed = %s; "
                    "compression_stats_logging_frequency = %s; batch_tensors_with_same_shape = %s",
                    matrix_approximation_rank, start_powerSGD_iter, min_compression_rate, orthogonalization_epsilon,
                    use_error_feedback, warm_start, random_seed, compression_stats_logging_frequency,
                    batch_tensors_with_same_shape)
        if (use_error_feedback or warm_start) and start_powerSGD_iter <= 1:
            # (DDP rebuilds its buckets after the first iteration: a remembered error would not fit them)
            raise ValueError("Expect `start_powerSGD_iter` > 1 if `use_error_feedback` or `warm_start` is enabled, "
                             "because PowerSGD can only be applied after the first two iterations in DDP.")
        self.process_group = process_group
        self.matrix_approximation_rank = matrix_approximation_rank
        self.start_powerSGD_iter = start_powerSGD_iter
        self.min_compression_rate = min_compression_rate
        self.use_error_feedback = use_error_feedback
        self.warm_start = warm_start
        self.orthogonalization_epsilon = orthogonalization_epsilon
        # the same seeds, in the same order, on every rank: each random Q is drawn from a fresh seed of this
        self.rng = np.random.RandomState(random_seed)
        self.error_dict, self.p_memory_dict, self.q_memory_dict = {}, {}, {}
        self.iter = 0
        self.total_numel_before_compression = 0
        self.total_numel_after_compression = 0
        self.compression_stats_logging_frequency = max(1, compression_stats_logging_frequency)
        self.next_stats_report = 0
        self.batch_tensors_with_same_shape = batch_tensors_with_same_shape

    def __getstate__(self):
        logger.warning("NOTE: Process group is not serializable and excluded from a saved state.")
        return {slot: getattr(self, slot) for slot in self.__slots__ if slot != "process_group"}

    def __setstate__(self, state):
        self.process_group = _require_group("PowerSGDState")  # (raises before init_process_group, as torch)
        logger.warning("NOTE: Process group will be set to a default group (i.e. the world size).\
                If a different group is desired, please set `self.process_group` after PowerSGD state is loaded.")
        for slot, value in state.items():
            setattr(self, slot, value)

    def maybe_increase_iter(self, bucket):
        """One iteration more when the last bucket of a backward is handed over."""
        if bucket.is_last():
            self.iter += 1
        if self.iter == self.start_powerSGD_iter:
            logger.info("Start to apply PowerSGD after %s iterations.", self.iter)

    def compression_stats(self):
        """(rate, numbers before compression, numbers after), over all compressed iterations so far."""
        after = self.total_numel_after_compression
        rate = self.total_numel_before_compression / after if after > 0 else 0
        return rate, self.total_numel_before_compression, after


# ---- shared steps -------------------------------------------------------------------------------------
def _group_and_size(state):
    group_to_use = state.process_group if state.process_group is not None else group.WORLD
    return group_to_use, group_to_use.size()


def _add_error_feedback(state, bucket_index, input_tensor):
    """Add last step's local error into the gradients; a copy of the result measures this step's error."""
    if not state.use_error_feedback:
        return None
    if bucket_index in state.error_dict:
        input_tensor.add_(state.error_dict[bucket_index])
    else:
        logger.info("A zero tensor of length %s that represents local error is created.", input_tensor.shape[0])
        state.error_dict[bucket_index] = zeros(input_tensor.shape[0], dtype=input_tensor.dtype)
    return input_tensor.detach().clone()


def _random_matrices(state, shapes, dtype):
    """torch's draws: one seed from the state's NumPy generator, then ``randn`` of each shape in turn from
    torch's generator seeded with it (torch forks its global one; a generator of its own is the same)."""
    generator = Generator().manual_seed(int(state.rng.randint(1_000_000_000)))
    return [randn(*shape, dtype=dtype, generator=generator) for shape in shapes]


def _sum_over_ranks(tensor, group_to_use):
    """Sum ``tensor`` over the group, in place, and return it."""
    all_reduce(tensor, group=group_to_use)
    return tensor


def _finish(state, bucket_index, input_tensor, input_tensor_cp):
    """Remember this rank's error, forget P and Q without warm start, count the iteration."""
    if state.use_error_feedback:
        state.error_dict[bucket_index] = input_tensor_cp - input_tensor
    if not state.warm_start:
        state.p_memory_dict.clear()
        state.q_memory_dict.clear()


# ---- powerSGD_hook: each layer's gradient compressed on its own ----------------------------------------
def _split_by_compression(state, tensors):
    """The bucket's gradients, as matrices [rows, -1]: those worth compressing and the others, and the
    sizes of all their P and Q factors."""
    to_compress, uncompressed, p_size, q_size = [], [], 0, 0
    for tensor in tensors:
        matrix = tensor.view(tensor.shape[0], -1)
        n, m = matrix.shape
        rank = min(n, m, state.matrix_approximation_rank)  # a bias (m = 1) has rank 1 at most
        worth, before, after = _should_compress(n, m, rank, state.min_compression_rate)
        state.total_numel_before_compression += before
        if worth:
            to_compress.append(matrix)
            p_size, q_size = p_size + n * rank, q_size + m * rank
            state.total_numel_after_compression += after
        else:
            uncompressed.append(tensor)
            state.total_numel_after_compression += before
    return to_compress, uncompressed, p_size, q_size


def _batches_by_shape(state, matrices):
    """The matrices to compress grouped by shape (first seen first): one [k, n, m] stack per shape when
    ``batch_tensors_with_same_shape``, else each matrix as a batch of one (a view: results land in the bucket)."""
    by_shape = {}
    for matrix in matrices:
        by_shape.setdefault(tuple(matrix.shape), []).append(matrix)
    batches = []
    for same in by_shape.values():
        if state.batch_tensors_with_same_shape and len(same) > 1:
            batches.append((stack(same), same))
        else:
            batches.extend((matrix.unsqueeze(0), None) for matrix in same)
    return batches


def _factor_views(state, bucket_index, batches):
    """Each batch's P [k, n, r] and Q [k, m, r]: views of the bucket's flat P and Q memory, in order."""
    ps, qs, p_at, q_at = [], [], 0, 0
    p_memory, q_memory = state.p_memory_dict[bucket_index], state.q_memory_dict[bucket_index]
    for batch, _ in batches:
        k, n, m = batch.shape
        rank = min(n, m, state.matrix_approximation_rank)
        ps.append(p_memory[p_at:p_at + k * n * rank].view(k, n, rank))
        qs.append(q_memory[q_at:q_at + k * m * rank].view(k, m, rank))
        p_at, q_at = p_at + k * n * rank, q_at + k * m * rank
    return ps, qs


def powerSGD_hook(state, bucket):
    """torch's ``powerSGD_hook``: the bucket's matrices compressed layer by layer to rank
    ``state.matrix_approximation_rank``; the rest all-reduced as is. A Future of the new flat gradients."""
    return _after_warm_up(state, bucket, _power_sgd_step)


def _after_warm_up(state, bucket, compressed_step):
    """Both hooks' start: plain all-reduces for the first ``start_powerSGD_iter`` iterations (torch's warm-up,
    while the gradients change fast), then ``compressed_step`` on the bucket, outside autograd."""
    group_to_use, world_size = _group_and_size(state)
    input_tensor = bucket.buffer()
    if state.iter < state.start_powerSGD_iter:
        state.maybe_increase_iter(bucket)
        return default._allreduce_fut(group_to_use, input_tensor)
    with no_grad():
        return compressed_step(state, bucket, input_tensor, group_to_use, world_size)


def _power_sgd_step(state, bucket, input_tensor, group_to_use, world_size):
    bucket_index, dtype = bucket.index(), input_tensor.dtype
    input_tensor_cp = _add_error_feedback(state, bucket_index, input_tensor)
    to_compress, uncompressed, p_size, q_size = _split_by_compression(state, bucket.gradients())
    _report_compression_stats(bucket, state)
    uncompressed_memory = (cat([t.view(-1) for t in uncompressed]) if uncompressed
                           else empty(0, dtype=dtype))
    need_random_qs = not state.warm_start or bucket_index not in state.p_memory_dict
    if need_random_qs:
        state.p_memory_dict[bucket_index] = empty(p_size, dtype=dtype)
        state.q_memory_dict[bucket_index] = empty(q_size, dtype=dtype)
    batches = _batches_by_shape(state, to_compress)
    ps, qs = _factor_views(state, bucket_index, batches)
    if need_random_qs:
        for q, drawn in zip(qs, _random_matrices(state, [tuple(q.shape) for q in qs], dtype)):
            q.copy_(drawn)
            _orthogonalize(q, state.orthogonalization_epsilon)
    else:  # warm start: last step's Q, orthogonalized again
        for q in qs:
            _orthogonalize(q, state.orthogonalization_epsilon)
    for (batch, _), q, p in zip(batches, qs, ps):
        p.copy_(bmm(batch, q))

    # The uncompressed tensors: summed, then divided (allreduce_hook divides first), back into the bucket.
    _sum_over_ranks(uncompressed_memory, group_to_use).div_(world_size)
    at = 0
    for tensor in uncompressed:
        tensor.copy_(uncompressed_memory[at:at + tensor.numel()].view_as(tensor))
        at += tensor.numel()
    # P: summed (orthogonalized next, so the scale does not matter); Q = M^T P summed and divided.
    _sum_over_ranks(state.p_memory_dict[bucket_index], group_to_use)
    for p in ps:
        _orthogonalize(p, state.orthogonalization_epsilon)
    for (batch, _), p, q in zip(batches, ps, qs):
        q.copy_(bmm(batch.transpose(1, 2), p))
    _sum_over_ranks(state.q_memory_dict[bucket_index], group_to_use).div_(world_size)
    # M ~ P Q^T, into the bucket (a stacked batch is copied back matrix by matrix).
    for (batch, originals), p, q in zip(batches, ps, qs):
        batch.copy_(bmm(p, q.transpose(1, 2)))
        for i, original in enumerate(originals or []):
            original.copy_(batch[i])
    _finish(state, bucket_index, input_tensor, input_tensor_cp)
    state.maybe_increase_iter(bucket)
    return _done(input_tensor)


def _done(tensor):
    """A completed Future of ``tensor`` (minilora's hook has run its collectives by the time it returns)."""
    future = Future()
    future.set_result(tensor)
    return future


# ---- batched_powerSGD_hook: the whole bucket as one square matrix ----------------------------------------
def batched_powerSGD_hook(state, bucket):
    """torch's ``batched_powerSGD_hook``: the flat bucket, padded with zeros to a square s x s matrix,
    compressed as one (faster, and much less accurate above rank 1)."""
    return _after_warm_up(state, bucket, _batched_step)


def _batched_step(state, bucket, input_tensor, group_to_use, world_size):
    total_length = input_tensor.shape[0]
    state.total_numel_before_compression += total_length
    side = math.ceil(math.sqrt(total_length))
    state.total_numel_after_compression += side * state.matrix_approximation_rank * 2
    # torch resizes the bucket's buffer in place; a padded copy, written back at the end, holds the same numbers
    padded = zeros(side * side, dtype=input_tensor.dtype)
    padded[:total_length] = input_tensor
    _report_compression_stats(bucket, state)
    bucket_index = bucket.index()
    padded_cp = _add_error_feedback(state, bucket_index, padded)
    matrix = padded.view(side, side)
    if not state.warm_start or bucket_index not in state.p_memory_dict:
        rank = state.matrix_approximation_rank
        state.p_memory_dict[bucket_index] = empty(side, rank, dtype=input_tensor.dtype)
        state.q_memory_dict[bucket_index] = _random_matrices(state, [(side, rank)], input_tensor.dtype)[0]
    _orthogonalize(state.q_memory_dict[bucket_index].unsqueeze(0))  # (torch passes no epsilon here)
    state.p_memory_dict[bucket_index].copy_(matmul(matrix, state.q_memory_dict[bucket_index]))
    p = _sum_over_ranks(state.p_memory_dict[bucket_index], group_to_use)
    _orthogonalize(p.unsqueeze(0))
    state.q_memory_dict[bucket_index].copy_(matmul(matrix.t(), p))
    q = _sum_over_ranks(state.q_memory_dict[bucket_index], group_to_use).div_(world_size)
    matrix.copy_(matmul(p, q.t()))
    _finish(state, bucket_index, padded, padded_cp)
    input_tensor.copy_(padded[:total_length])
    state.maybe_increase_iter(bucket)
    return _done(input_tensor)
