"""MKL's float32 and float64 dot product (``sdot``/``ddot``) on an Intel AVX-512 CPU: torch's ``dot``, ``vdot``,
``inner`` and ``matmul`` of two vectors, and so LBFGS's dot products; and its matrix-vector products (``dgemv``, ``sgemv``:
``mv``, ``addmv``, ``matmul`` of a matrix and a vector).

A dot product's last bits depend on the order of its additions. Found with planted operands (``+-2^60`` (float64)
or ``+-2^40`` (float32) at two positions among ones: how many ones survive says where the two met, for every pair of
positions at sizes 2-199 and sampled pairs up to 65536, data offset by 0, 1 or 3 elements) and then checked on
random operands (sizes 1-300 and up to a million, offsets 0, 1, 5: every bit equal), MKL (torch 2.13's) adds:

* vectors of ``L`` lanes (16 floats or 8 doubles: a 64-byte register), each product fused into its lane's sum
  (one rounding: ``fma``), vector ``v`` into accumulator ``v % 4``; the last ``vectors % 4`` whole vectors into
  accumulators 0, 1, 0 (MKL's loop by two vectors, then by one); the last ``n % L`` products into accumulator 0's
  first lanes (a masked vector);
* the accumulators as ``(a0 + a1) + (a2 + a3)``;
* the ``L`` lanes folded in halves: ``l + l^4``, ``^2``, ``^1`` (doubles); ``l + l^8``, ``^4``, ``^1``, ``^2``
  (floats: the last two steps swapped).

Where the order is not claimed (``dot`` returns None, and the caller's BLAS sum stands): another CPU (MKL picks its
kernels by maker and features); strided operands (MKL's strided kernel adds otherwise: not found); and from 32 KiB
of one operand (4096 doubles, 8192 floats) on more than one thread (``parallel.num_threads()``, taken as torch's),
where MKL splits the vector between threads at a point not found (near the middle, on a whole vector, but not only).

``dgemv`` of a C-contiguous matrix (torch's row-major ``mv``: MKL's transposed gemv) sums each row otherwise
(planted operands, sizes 2-69, then random ones: 1-100 rows of 1-4100, one or two threads, every bit equal): 2
accumulators of 8 fused lanes (vector ``v`` into ``v % 2``), added together before the odd last whole vector and the
masked tail are fused in; lanes folded ``l + l^2``, ``^1``, ``^4``.

``sgemv`` (float32) sets the first product of a row apart and runs the rest from element 1 in vectors of 16 fused
lanes, folded ``l + l^8``, ``^4``, ``^2``, ``^1``, with a kernel chosen by the row's place (planted operands, then
random ones: 1-100 rows of 1-1000, data offset by 0 or 3 elements, every bit equal on one thread):

* rows in groups of 4: the first product starts lane 0; one accumulator; folded; then the last ``(k - 1) % 16``
  products fused into a vector whose lane 0 holds that sum, folded again;
* the 1-3 rows after the last group: 2 accumulators (the second of them: 1), added before the odd last vector; the
  masked tail; folded; then the first product, rounded, added.

On two threads MKL splits a float32 matrix's rows at ceil(rows / 2) (from 30000 products; at 9-50 rows none up to
27000), which regroups them; ``rows_claimed`` keeps below 16384 there. ``addmv`` ends both as ``fma(alpha, sum,
beta * y)`` (``ops/extra.py``).

``dgemv`` of a matrix laid out by columns (torch's ``mv`` of a transposed matrix, ``v @ A``, ``addmv``'s vec
gradient: MKL's plain gemv) runs the columns in order, each fused into the running sums: ``y = fma(A[:, j], alpha *
x[j], y)`` from ``beta * y`` (0 for beta 0), the reference BLAS loop (random operands: 2-5000 rows of 1-1000 columns,
every bit equal on one thread; on two threads MKL splits the columns from 150-300 of them at up to 1000 rows, not
modelled: ``columns_claimed`` keeps to 100 there). Not modelled, the BLAS sum stands: sgemv of such a matrix (it
differs from this loop from 100 columns on), and one row (MKL sums it otherwise).
"""
import numpy as np

from . import blas, float32_math, native, parallel

# Where it was measured: an Intel CPU with AVX-512 (the CPU float32_math's MKL sqrt was matched on)
APPLIES = float32_math.MKL_SQRT_CPU
ACCUMULATORS = 4
_THREADED_FROM_BYTES = 32768  # from here on several threads MKL splits the vector (not modelled)
_LANES = {np.dtype(np.float32): 16, np.dtype(np.float64): 8}
_FOLDS = {16: (8, 4, 1, 2), 8: (4, 2, 1)}
_SGEMV_THREADED_FROM = 16384  # products: below the sizes seen unsplit (see rows_claimed)


def direct():
    """Whether MKL's own ``?dot``/``?gemv`` are called instead (``blas.dot``, ``blas.gemv``, with the arguments ATen
    passes): MKL is minilora's BLAS -- the library torch calls -- on a CPU the orders here were not measured on. MKL
    picks its kernels by maker and features, so they do not carry over (an AMD Zen 4: 2-801 of an ``mv(A.t(), v)``'s
    outputs an ulp off torch's); the call itself does. (On the measured CPU the orders stay: they are the lesson, and
    they hold where MKL is not installed.)"""
    return not APPLIES and blas.library() == "mkl"


def _numpy_float_arrays(*arrays):
    return all(type(a) is np.ndarray and a.dtype == arrays[0].dtype for a in arrays) and arrays[0].dtype in _LANES


def claims(x, y):
    """Whether MKL's order here is this module's: two C-contiguous NumPy vectors of float32 or float64 (one dtype),
    on the measured CPU, short enough for one thread or on one; any length where ``direct``."""
    return ((APPLIES or direct()) and _numpy_float_arrays(x, y) and x.ndim == y.ndim == 1
            and x.flags.c_contiguous and y.flags.c_contiguous
            and (direct() or x.nbytes < _THREADED_FROM_BYTES or parallel.num_threads() == 1))


def dot(x, y):
    """``x . y`` as MKL sums it (a NumPy scalar of their dtype), or None where ``claims`` is False. Compiled where a
    C compiler is found (``native/float32_kernels.c``'s ``ml_mkl_sdot``/``ml_mkl_ddot``: the same order)."""
    if not claims(x, y):
        return None
    if direct():
        return blas.dot(x, y)
    library = float32_math._native_library()
    if library is None:
        return dot_in_mkl_order(x, y)
    out = np.empty(1, x.dtype)
    kernel = library.ml_mkl_sdot if x.dtype == np.float32 else library.ml_mkl_ddot
    kernel(native.address(x), native.address(y), native.address(out), x.size)
    return out[0]


def dot_in_mkl_order(x, y):
    """The NumPy reference of MKL's order (see the module's docstring): any length, float32 or float64."""
    lanes = _LANES[x.dtype]
    fma = float32_math.fused_multiply_add if x.dtype == np.float32 else float32_math.fused_multiply_add64
    acc = np.zeros((ACCUMULATORS, lanes), x.dtype)
    vectors = x.size // lanes
    main = vectors - vectors % ACCUMULATORS
    for start in range(0, main * lanes, ACCUMULATORS * lanes):  # 4 vectors at a time, one to each accumulator
        block = slice(start, start + ACCUMULATORS * lanes)
        acc = fma(x[block].reshape(acc.shape), y[block].reshape(acc.shape), acc)
    for v in range(main, vectors):  # the last whole vectors: accumulators 0, 1, 0
        part = slice(v * lanes, (v + 1) * lanes)
        acc[(v - main) % 2] = fma(x[part], y[part], acc[(v - main) % 2])
    tail = x.size - vectors * lanes
    acc[0, :tail] = fma(x[vectors * lanes:], y[vectors * lanes:], acc[0, :tail])
    folded = (acc[0] + acc[1]) + (acc[2] + acc[3])
    for step in _FOLDS[lanes]:
        folded = folded + folded[np.arange(lanes) ^ step]
    return folded[0]


def rows_claimed(mat, vec):
    """Whether ``rows_times_vector`` models MKL here: a C-contiguous float64 or float32 matrix and vector, the
    measured CPU; float32 with at least one column, and on one thread or fewer than ``_SGEMV_THREADED_FROM``
    products (beyond, MKL splits the rows between threads, which regroups them by 4: split at ceil(rows / 2) from
    30000 products, at 9-50 rows none up to 27000 -- where it starts is not pinned down)."""
    if not ((APPLIES or direct()) and _numpy_float_arrays(mat, vec) and mat.ndim == 2 and vec.ndim == 1
            and mat.flags.c_contiguous and vec.flags.c_contiguous):
        return False
    return direct() or mat.dtype == np.float64 or (mat.shape[1] > 0 and (mat.size < _SGEMV_THREADED_FROM
                                                                          or parallel.num_threads() == 1))


def rows_times_vector(mat, vec):
    """``mat @ vec`` as MKL's ``dgemv``/``sgemv`` sums it (see the module's docstring), or None where
    ``rows_claimed`` is False. Compiled where a C compiler is found (``ml_mkl_dgemv_rows``, ``ml_mkl_sgemv_rows``:
    the same orders)."""
    if not rows_claimed(mat, vec):
        return None
    if direct():
        return addmv(None, mat, vec, 0, 1)
    library = float32_math._native_library()
    if library is None:
        return (rows_times_vector_in_mkl_order if mat.dtype == np.float64 else sgemv_in_mkl_order)(mat, vec)
    out = np.empty(mat.shape[0], mat.dtype)
    if out.size:
        kernel = library.ml_mkl_dgemv_rows if mat.dtype == np.float64 else library.ml_mkl_sgemv_rows
        kernel(*map(native.address, (mat, vec, out)), mat.shape[0], mat.shape[1])
    return out


_COLUMNS_THREADED_BEYOND = 100  # columns: on more threads MKL splits them from 150-300 (see the docstring)


def columns_claimed(mat, vec):
    """Whether ``columns_times_vector`` models MKL here: a float64 matrix of 2 or more rows that torch hands MKL's
    plain gemv (its elements a column apart, ``lda`` at least the rows: ATen's ``gemv('n', ...)`` condition), a
    C-contiguous vector, the measured CPU, one thread or at most ``_COLUMNS_THREADED_BEYOND`` columns."""
    if direct():
        return _numpy_float_arrays(mat, vec) and mat.ndim == 2 and vec.ndim == 1 and by_columns(mat)
    return (APPLIES and _numpy_float_arrays(mat, vec) and mat.ndim == 2 and vec.ndim == 1
            and mat.dtype == np.float64 and mat.shape[0] >= 2 and by_columns(mat) and vec.flags.c_contiguous
            and (mat.shape[1] <= _COLUMNS_THREADED_BEYOND or parallel.num_threads() == 1))


def by_columns(mat):
    """Whether ATen's ``mv`` hands ``mat`` to gemv as it lies, by columns (``stride(0) == 1`` and ``lda >= rows``)."""
    return mat.strides[0] == mat.itemsize and (mat.shape[1] == 1 or mat.strides[1] >= mat.shape[0] * mat.itemsize)


def columns_times_vector(mat, vec, alpha=1.0, start=None):
    """``start + alpha * (mat @ vec)`` as MKL's plain ``dgemv`` computes it (see the module's docstring): the columns
    in order, ``y = fma(mat[:, j], alpha * vec[j], y)`` from ``start`` (``beta * y``; None: 0); None where
    ``columns_claimed`` is False."""
    if not columns_claimed(mat, vec):
        return None
    if direct():
        return addmv(start, mat, vec, 0 if start is None else 1, alpha)
    rows = mat.shape[0]
    total = np.zeros(rows) if start is None else np.array(np.broadcast_to(start, rows), np.float64)
    for column, x in zip(mat.T, vec * np.float64(alpha) if alpha != 1 else vec):
        total = float32_math.fused_multiply_add64(column, np.full(rows, x), total)
    return total


def sgemv_in_mkl_order(mat, vec):
    """The NumPy reference of ``sgemv``'s order (the module's docstring): the rows in groups of 4 one way, the first
    row after them with 2 accumulators, the second with 1, the third with 2."""
    rows = mat.shape[0]
    grouped = rows - rows % 4
    out = np.empty(rows, np.float32)
    out[:grouped] = _sgemv_rows(mat[:grouped], vec, accumulators=1, grouped=True)
    for r in range(grouped, rows):
        out[r] = _sgemv_rows(mat[r:r + 1], vec, accumulators=1 if r - grouped == 1 else 2, grouped=False)[0]
    return out


def _fold16(lanes):
    for step in (8, 4, 2, 1):
        lanes = lanes + lanes[:, np.arange(16) ^ step]
    return lanes[:, 0]


def _fused_into(lanes, mat, vec, part):
    """``lanes[:, :width]`` with the products of ``part`` of each row fused in (one rounding each)."""
    width = part.stop - part.start
    lanes[:, :width] = float32_math.fused_multiply_add(np.ascontiguousarray(mat[:, part]), np.broadcast_to(
        vec[part], (mat.shape[0], width)).copy(), np.ascontiguousarray(lanes[:, :width]))
    return lanes


def _sgemv_rows(mat, vec, accumulators, grouped):
    """One of ``sgemv``'s row kernels on rows ``mat`` [R, K] (K >= 1): their sums (float32 [R])."""
    rows, k = mat.shape
    first = mat[:, 0] * vec[0]
    vectors = (k - 1) // 16
    whole = vectors - vectors % accumulators
    acc = np.zeros((accumulators, rows, 16), np.float32)
    if grouped:
        acc[0, :, 0] = first
    for v in range(whole):
        acc[v % accumulators] = _fused_into(acc[v % accumulators], mat, vec, slice(1 + 16 * v, 17 + 16 * v))
    lanes = acc[0] + acc[1] if accumulators == 2 else acc[0]
    for v in range(whole, vectors):
        lanes = _fused_into(lanes, mat, vec, slice(1 + 16 * v, 17 + 16 * v))
    tail = slice(1 + 16 * vectors, k)
    if not grouped:
        return _fold16(_fused_into(lanes, mat, vec, tail)) + first
    total = _fold16(lanes)
    if tail.start >= k:
        return total
    lanes = np.zeros((rows, 16), np.float32)
    lanes[:, 0] = total
    return _fold16(_fused_into(lanes, mat, vec, tail))


def rows_times_vector_in_mkl_order(mat, vec):
    """The NumPy reference of ``dgemv``'s order, all rows at once."""
    fma, lanes = float32_math.fused_multiply_add64, _LANES[mat.dtype]
    rows, k = mat.shape
    vectors = k // lanes
    pairs = vectors - vectors % 2
    acc = np.zeros((rows, 2, lanes))
    for start in range(0, pairs * lanes, 2 * lanes):  # two vectors at a time, one to each accumulator
        part = slice(start, start + 2 * lanes)
        acc = fma(np.ascontiguousarray(mat[:, part]).reshape(acc.shape), np.broadcast_to(
            vec[part].reshape(2, lanes), acc.shape).copy(), acc)
    summed = acc[:, 0] + acc[:, 1]
    for start in range(pairs * lanes, k, lanes):  # the odd last vector, then the tail: into the lanes they fall on
        part = slice(start, min(start + lanes, k))
        width = part.stop - part.start
        summed[:, :width] = fma(np.ascontiguousarray(mat[:, part]), np.broadcast_to(vec[part], (rows, width)).copy(),
                                np.ascontiguousarray(summed[:, :width]))
    for step in (2, 1, 4):
        summed = summed + summed[:, np.arange(lanes) ^ step]
    return summed[:, 0].copy()


def addmv(y, mat, vec, beta, alpha):
    """``beta * y + alpha * (mat @ vec)`` by MKL's ``?gemv`` called as ATen's ``addmv`` calls it (``direct``): the
    matrix as it lies where it is laid out by columns (``gemv('n', ...)``) or by rows (``gemv('t', ...)``), else a
    C-contiguous copy by rows; the vector with its stride; ``y`` ignored for ``beta`` 0 (a new array). None where ATen
    would not call BLAS (not float32/float64 NumPy arrays of one dtype, a vector's stride not positive) or there is
    nothing to sum."""
    if not (_numpy_float_arrays(mat, vec) and mat.ndim == 2 and vec.ndim == 1):
        return None
    rows, cols = mat.shape
    size = mat.itemsize
    if not rows or not cols or vec.strides[0] <= 0 or vec.strides[0] % size:
        return None
    out = np.zeros(rows, mat.dtype) if beta == 0 else np.array(np.broadcast_to(y, (rows,)), mat.dtype)
    column_step, row_step = mat.strides[1] // size, mat.strides[0] // size
    if mat.strides[0] == size and (cols == 1 or column_step >= rows):
        return blas.gemv("n", rows, cols, alpha, mat, rows if cols == 1 else column_step, vec, vec.strides[0] // size,
                         beta, out)
    if not (mat.strides[1] == size and (rows == 1 or row_step >= max(1, cols)) and mat.strides[0] > 0):
        mat = np.ascontiguousarray(mat)
        row_step = cols
    return blas.gemv("t", cols, rows, alpha, mat, cols if rows == 1 else row_step, vec, vec.strides[0] // size, beta,
                     out)
