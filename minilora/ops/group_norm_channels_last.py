"""torch 2.13's float32 group norm on a channels_last(_3d) input: its channels-last kernels' order of sums.

torch hands a channels-last input [N, C, H, W] to other kernels than a contiguous one
(``GroupNormKernelImplChannelsLastInternal`` and its backward): they read the input as [N, H * W, C] rows and sum
each (sample, group) across the rows, in another order than the contiguous kernel's RowwiseMoments. The composed
float32 ops minilora ran there before left ~60% of the outputs and input gradients an ulp or more off torch's.

Each kernel has two forms, by the size of a feature map (H * W):

    below the threshold   per (sample, group): the group's D channels in vectors of 8 floats (the last one
    (1024 forward,        partial), one running sum per lane down the rows, the lanes folded in halves
    2048 backward)        (``vec_reduce_all``); x * x and x * dy products rounded before their sum
    at or above it        per thread (``at::parallel_for`` over the N * H * W rows): a running sum per
                          (sample, channel) of its rows, x * x and x * dy fused; then per (sample, group)
                          the channels one by one, each thread's sum in thread order

then mean = sum * s, var = fma(sumsq, s, -mean^2) (s = 1 / (D * H * W)), rstd = 1 / sqrt(var + eps) in double,
y = fma(x, scale, fma(-scale, mean, beta)) with scale = rstd * gamma; the backward's coefficients are the contiguous
kernel's, dx = fma(c2, x, c1 * dy) + c3. The bfloat16/float16 forms read a vector of 16 as two float vectors of 8:
the forward adds the two halves (and their squares) before the running sums, the backward takes the channels after
a group's last 16 one by one. Measured bit for bit against torch 2.13 (its AVX2 build, which AVX-512 CPUs run: 8
floats a vector), on 1 and 2 threads (``parallel.num_threads()`` taken as torch's): tests/test_silent_values_r26.py
(but for one float16 input gradient in 18432 of a per-thread backward with float16 parameters, not found).
"""
import numpy as np

from .. import float32_math, float32_sums, parallel

_LANES = 8  # Vectorized<float>::size() of the AVX2 build these kernels run
_FORWARD_PER_THREAD_FROM = 1024  # feature_map_threshold: from this H * W the forward sums per thread
_BACKWARD_PER_THREAD_FROM = 2048  # ... and the backward


def applies(x):
    """Whether NumPy ``x`` [N, C, ...] (float32, bfloat16 or float16) is laid out channels-last (its channels
    innermost, more than one position per channel): what torch's ``suggest_memory_format`` sends to these kernels."""
    from ..factories import channels_last, channels_last_3d, suggested_format
    return (type(x) is np.ndarray and x.itemsize in (2, 4) and x.size > 0 and not float32_math.CPU_CAPABILITY ==
            "default" and suggested_format(x) in (channels_last, channels_last_3d))


def rows_of(x):
    """``x`` [N, C, ...] as torch's channels-last kernels read it: [N, H * W, C], C-contiguous float32 (a 16-bit
    input's values exactly)."""
    n, c = x.shape[:2]
    return np.ascontiguousarray(np.moveaxis(x, 1, -1), dtype=np.float32).reshape(n, -1, c)


def statistics(rows, groups, eps, sixteen_bit=False):
    """Each (sample, group)'s float32 mean and rstd ([N * G]) of ``rows`` [N, H * W, C] as the forward kernel
    computes them (``sixteen_bit``: its bfloat16/float16 form, whose vectors of 16 add their halves first)."""
    n, size, c = rows.shape
    if size < _FORWARD_PER_THREAD_FROM:
        total, squares = (_paired_lane_moments if sixteen_bit else _lane_moments)(rows, groups)
    else:
        total, squares = _per_thread_moments(rows, groups)
    s = np.float32(1) / np.float32(c // groups * size)
    mean = total * s
    variance = np.maximum(float32_math.fused_multiply_add(squares, s, -(mean * mean)), np.float32(0))
    return mean, (1 / np.sqrt(variance.astype(np.float64) + eps)).astype(np.float32)


def output(rows, groups, mean, rstd, weight, bias, fused_shift=True):
    """The kernel's output rows [N, H * W, C] from float32 weight and bias: fma(x, scale, fma(-scale, mean, beta)),
    scale = rstd * gamma; without ``fused_shift`` (16-bit parameters: their conversion to float sits between the
    product and the sum, measured) -scale * mean + beta rounded twice."""
    n, _, c = rows.shape
    d = c // groups
    gamma = np.ones(c, np.float32) if weight is None else weight
    beta = np.zeros(c, np.float32) if bias is None else bias
    scale = rstd.reshape(n, groups, 1) * gamma.reshape(1, groups, d)
    mean, beta = np.broadcast_to(mean.reshape(n, groups, 1), scale.shape), beta.reshape(1, groups, d)
    shift = float32_math.fused_multiply_add(-scale, mean, np.broadcast_to(beta, scale.shape)) if fused_shift else \
        -scale * mean + beta
    scale, shift = (np.broadcast_to(v.reshape(n, 1, c), rows.shape) for v in (scale, shift))
    return float32_math.fused_multiply_add(rows, scale, shift)


def gradients(dy, rows, groups, mean, rstd, gamma, needs, sixteen_bit=False, fused=True):
    """(dx rows [N, H * W, C] or None, ds, db [N, C]) of the backward kernel from float32 rows, each group's mean and
    rstd as the forward saved them and float32 gamma; ds, db feed GammaBackward and BetaBackward, which are the
    contiguous kernel's. ``sixteen_bit``: its bfloat16/float16 form (the channels after a group's last 16 one by
    one); not ``fused``: float16 parameters, whose conversion to float sits between the product and the sum of the
    last channels' ds * gamma (measured: fused with float32 parameters)."""
    n, size, c = rows.shape
    if size < _BACKWARD_PER_THREAD_FROM and sixteen_bit:
        ds, db, ds_gamma, db_gamma = _sixteen_bit_lane_gradient_sums(dy, rows, groups, gamma, fused)
    elif size < _BACKWARD_PER_THREAD_FROM:
        ds, db, ds_gamma, db_gamma = _lane_gradient_sums(dy, rows, groups, gamma)
    else:
        ds, db, ds_gamma, db_gamma = _per_thread_gradient_sums(dy, rows, groups, gamma)
    if not needs[0]:
        return None, ds, db
    s = np.float32(1) / np.float32(c // groups * size)
    fma = float32_math.fused_multiply_add
    c2 = fma(db_gamma, mean, -ds_gamma) * rstd * rstd * rstd * s
    c3 = fma(-c2, mean, -(db_gamma * rstd * s))
    d = c // groups
    per_channel = lambda v: np.broadcast_to(np.repeat(v.reshape(n, groups), d, axis=1).reshape(n, 1, c),  # noqa
                                            rows.shape)
    c1 = per_channel(rstd) * np.broadcast_to(gamma.reshape(1, 1, c), rows.shape)
    return fma(per_channel(c2), rows, c1 * dy) + per_channel(c3), ds, db


# ---- below the threshold: per (sample, group), 8 lanes down the rows -----------------------------------------
def _group_lanes(rows, groups):
    """``rows`` [N, H * W, C] as [N * G, H * W * vectors, 8]: each group's D channels in vectors of 8 (the last
    zero-padded, as its partial load), in the kernel's order: row after row, vector after vector. (A 16-bit last
    vector of at most 8 channels adds x0 alone: the same sums as x0 + 0.)"""
    n, size, c = rows.shape
    d = c // groups
    vectors = -(-d // _LANES)
    padded = np.zeros((n, size, groups, vectors * _LANES), np.float32)
    padded[..., :d] = rows.reshape(n, size, groups, d)
    return padded.transpose(0, 2, 1, 3).reshape(n * groups, size * vectors, _LANES)


def _down_the_rows(lanes):
    """Each running sum down axis 1 of ``lanes`` [N, rows, ...], from +0: a running total (``accumulate``), which
    adds row after row whatever the shape (a reduction would add a lone column pairwise)."""
    if lanes.shape[1] == 0:
        return np.zeros(lanes.shape[:1] + lanes.shape[2:], np.float32)
    return np.add.accumulate(lanes, axis=1)[:, -1] + np.float32(0)


def _folded(lanes):
    """``vec_reduce_all``'s sum of the lanes (last axis): lane j + lane j + 4, then + 2, then + 1."""
    while lanes.shape[-1] > 1:
        half = lanes.shape[-1] // 2
        lanes = lanes[..., :half] + lanes[..., half:]
    return lanes[..., 0]


def _lane_moments(rows, groups):
    """ColumnwiseMoments: each (sample, group)'s sum and sum of squares (the squares rounded, then added)."""
    lanes = _group_lanes(rows, groups)
    return _folded(_down_the_rows(lanes)), _folded(_down_the_rows(lanes * lanes))


def _paired_lane_moments(rows, groups):
    """The 16-bit ColumnwiseMoments: each vector of 16 channels read as two float vectors of 8, added to each other
    (and their squares, exact, likewise) before the running sums; a last vector of at most 8 alone."""
    n, size, c = rows.shape
    d = c // groups
    lanes = _group_lanes(rows, groups).reshape(n * groups, size, -1, _LANES)
    if lanes.shape[2] % 2:  # (an odd count of 8s: the last vector's second half is zeros, as its masked load)
        lanes = np.concatenate([lanes, np.zeros_like(lanes[:, :, :1])], axis=2)
    halves = lanes.reshape(n * groups, size, -1, 2, _LANES)
    pairs, squares = halves[..., 0, :] + halves[..., 1, :], halves[..., 0, :] ** 2 + halves[..., 1, :] ** 2
    flat = lambda a: a.reshape(n * groups, -1, _LANES)  # noqa: E731  (row after row, vector after vector)
    return _folded(_down_the_rows(flat(pairs))), _folded(_down_the_rows(flat(squares)))


def _sixteen_bit_lane_gradient_sums(dy, rows, groups, gamma, fused=True):
    """The 16-bit CalcInternalGradientsChannelsLast: each group's whole vectors of 16 channels as the float32 form's
    pairs of 8-lane vectors, then each channel after them alone: its sums of x * dy and dy down the rows, and its
    ds * gamma, db * gamma added in turn (each product rounded)."""
    n, size, c = rows.shape
    d = c // groups
    whole = d // 16 * 16
    part = lambda a, cut: np.ascontiguousarray(a.reshape(n, size, groups, d)[..., cut]).reshape(n, size, -1)  # noqa
    ds, db, ds_gamma, db_gamma = _lane_gradient_sums(part(dy, slice(0, whole)), part(rows, slice(0, whole)), groups,
                                                     np.ascontiguousarray(gamma.reshape(groups, d)[:, :whole]).ravel())
    x_tail, dy_tail = (part(a, slice(whole, d)).reshape(n, size, groups, d - whole) for a in (rows, dy))
    ds_tail, db_tail = _down_the_rows(x_tail * dy_tail), _down_the_rows(dy_tail)  # [N, G, d - whole]
    ds_gamma, db_gamma = ds_gamma.reshape(n, groups), db_gamma.reshape(n, groups)
    fma = float32_math.fused_multiply_add if fused else lambda a, b, c: a * b + c
    for j in range(d - whole):
        weight = np.broadcast_to(gamma.reshape(groups, d)[:, whole + j], ds_gamma.shape)
        ds_gamma, db_gamma = fma(ds_tail[..., j], weight, ds_gamma), fma(db_tail[..., j], weight, db_gamma)
    join = lambda head, tail: np.concatenate([head.reshape(n, groups, whole), tail], axis=2).reshape(n, c)  # noqa
    return join(ds, ds_tail), join(db, db_tail), ds_gamma.reshape(-1), db_gamma.reshape(-1)


def _lane_gradient_sums(dy, rows, groups, gamma):
    """CalcInternalGradientsChannelsLast: per vector of a group's channels the lanes' sums of x * dy (each product
    rounded) and of dy down the rows -- ds and db per channel -- and, vector after vector from 0, the folded
    sums of ds * gamma and db * gamma."""
    n, size, c = rows.shape
    d = c // groups
    vectors = -(-d // _LANES)
    shape = (n * groups, size, vectors, _LANES)
    x_lanes, dy_lanes = (_group_lanes(a, groups).reshape(shape) for a in (rows, dy))
    ds_lanes, db_lanes = _down_the_rows(x_lanes * dy_lanes), _down_the_rows(dy_lanes)  # [N * G, vectors, 8]
    gamma_lanes = np.zeros((groups, vectors * _LANES), np.float32)
    gamma_lanes[:, :d] = gamma.reshape(groups, d)
    gamma_lanes = np.tile(gamma_lanes.reshape(1, groups, vectors, _LANES), (n, 1, 1, 1)).reshape(ds_lanes.shape)
    ds_gamma, db_gamma = np.zeros(n * groups, np.float32), np.zeros(n * groups, np.float32)
    for v in range(vectors):
        ds_gamma = ds_gamma + _folded(ds_lanes[:, v] * gamma_lanes[:, v])
        db_gamma = db_gamma + _folded(db_lanes[:, v] * gamma_lanes[:, v])
    per_channel = lambda lanes: lanes.reshape(n, groups, vectors * _LANES)[..., :d].reshape(n, c)  # noqa: E731
    return per_channel(ds_lanes), per_channel(db_lanes), ds_gamma, db_gamma


# ---- at or above it: per thread, then the threads' sums channel by channel ----------------------------------
def _thread_segments(n, size):
    """The (thread, sample, first row, end row) pieces of ``at::parallel_for(0, N * H * W, 1)``'s chunks of the
    rows, each within one sample."""
    total = n * size
    chunk = float32_sums.thread_chunk(total, grain=1) if parallel.num_threads() > 1 else total
    for thread, first in enumerate(range(0, total, chunk)):
        end = min(total, first + chunk)
        for sample in range(first // size, (end - 1) // size + 1):
            start = sample * size
            yield thread, sample, max(first, start) - start, min(end, start + size) - start


def _row_order_sum(block):
    """The column sums of a 2-D float32 ``block``, row after row from +0."""
    return _down_the_rows(block[None])[0]


def _per_thread_sums(rows, first, second):
    """[threads, N, C] buffers of each thread's running sums over its rows (``first(block)``, ``second(block)``:
    the column sums of one sample's piece of a chunk)."""
    n, size, c = rows.shape
    segments = list(_thread_segments(n, size))
    threads = segments[-1][0] + 1
    sums = np.zeros((2, threads, n, c), np.float32)
    for thread, sample, start, stop in segments:
        sums[0, thread, sample], sums[1, thread, sample] = first(sample, start, stop), second(sample, start, stop)
    return sums


def _channel_by_channel(buffer, groups, weights=None):
    """Per (sample, group) of a [threads, N, C] buffer: for each channel, each thread's value (times the channel's
    weight, rounded) added in turn from 0 -> [N * G]."""
    threads, n, c = buffer.shape
    d = c // groups
    parts = buffer.reshape(threads, n, groups, d)
    scale = None if weights is None else weights.reshape(groups, d)
    total = np.zeros((n, groups), np.float32)
    for channel in range(d):
        for thread in range(threads):
            part = parts[thread, :, :, channel]
            total = total + (part if scale is None else part * scale[:, channel])
    return total.reshape(-1)


def _per_thread_moments(rows, groups):
    """CalcMeanVar per thread (x * x fused into its running sum), then the sums channel by channel."""
    sums = _per_thread_sums(rows, lambda i, a, b: _row_order_sum(rows[i, a:b]),
                            lambda i, a, b: float32_sums.fma_square_columns(rows[i, a:b]))
    return _channel_by_channel(sums[0], groups), _channel_by_channel(sums[1], groups)


def _per_thread_gradient_sums(dy, rows, groups, gamma):
    """DsDbRowwiseMomentsChannelsLast per thread (x * dy fused into its running sum), then per channel the threads'
    ds and db (added in thread order) and per group the sums of ds * gamma and db * gamma (each product rounded)."""
    sums = _per_thread_sums(rows, lambda i, a, b: float32_sums.fma_product_columns(rows[i, a:b], dy[i, a:b]),
                            lambda i, a, b: _row_order_sum(dy[i, a:b]))
    ds, db = (_in_thread_order(buffer) for buffer in sums)
    return ds, db, _channel_by_channel(sums[0], groups, gamma), _channel_by_channel(sums[1], groups, gamma)


def _in_thread_order(buffer):
    """[threads, N, C] -> [N, C]: each thread's value added in turn from 0."""
    total = np.zeros(buffer.shape[1:], np.float32)
    for part in buffer:
        total = total + part
    return total
