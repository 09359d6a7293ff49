"""Using every CPU core from NumPy: the big ops split their arrays into row blocks, one per thread.

NumPy runs each ufunc, reduction and matrix product on one core, but it releases Python's GIL
while it computes. So two Python threads that work on the two halves of an array really do run at
the same time, each on its own core. ``rows(fn, *arrays)`` is that idea in one function: it cuts
the arrays into matching blocks along their first axis and calls ``fn`` on each block in its own
thread::

    out = np.empty((n, d_out), np.float32)
    parallel.rows(lambda x_block, out_block: np.matmul(x_block, w.T, out=out_block), x, out)

Blocks of the output are disjoint views, so the threads never write the same memory.

Why not let the BLAS library thread its matrix products, as PyTorch's does? OpenBLAS's worker
threads keep spinning on their cores for ~0.1 s after each product, waiting for the next one: a
transformer step alternates products with elementwise ops every millisecond, so those workers
would compete with the threads running the elementwise work. Instead minilora runs BLAS single-
threaded and splits the products itself (``set_num_threads`` does both): one thread pool for
everything, and idle threads sleep.

Work smaller than ``MIN_ITEMS`` elements per thread runs inline: waking a thread costs tens of
microseconds. GPU arrays (CuPy) are never split: the GPU is already parallel.
"""
import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["rows", "matmul", "num_threads", "set_num_threads", "MIN_ITEMS"]

MIN_ITEMS = 16384  # elements (or multiply-adds) per thread below which splitting costs more than it saves

_threads = 1
_pool = None


def num_threads():
    """How many threads the CPU ops use (``MINILORA_NUM_THREADS``, default: all cores, at most 8)."""
    return _threads


def set_num_threads(n):
    """Use ``n`` threads for CPU ops (as ``torch.set_num_threads``); BLAS itself runs single-threaded."""
    global _threads, _pool
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: need at least 1 thread, got {n}")
    if _pool is not None:
        _pool.shutdown(wait=True)
    _threads = n
    _pool = ThreadPoolExecutor(n - 1, thread_name_prefix="minilora") if n > 1 else None
    _single_threaded_blas()


def rows(fn, *arrays, work_per_row=None):
    """Call ``fn(*blocks)`` on matching blocks of rows (first axis) of ``arrays``, in parallel.

    All arrays need the same first dimension; ``None`` passes through as ``None``, and a Python
    list is split like an array (into sub-lists). ``work_per_row`` (default: the elements of one
    row of the first array) decides whether the work is big enough to be worth splitting. ``fn``'s
    return values are dropped: it writes its results into output arrays passed as blocks.
    """
    n = len(arrays[0])
    if work_per_row is None:
        work_per_row = arrays[0][0].size if n else 0
    parts = min(_threads, n, max(1, (n * work_per_row) // MIN_ITEMS))
    on_cpu = all(a is None or isinstance(a, (np.ndarray, list)) for a in arrays)
    if parts <= 1 or not on_cpu:
        fn(*arrays)
        return
    bounds = [n * i // parts for i in range(parts + 1)]
    blocks = [[None if a is None else a[start:stop] for a in arrays]
              for start, stop in zip(bounds, bounds[1:])]
    futures = [_pool.submit(fn, *block) for block in blocks[1:]]
    try:
        fn(*blocks[0])  # the calling thread does the first block itself
    finally:
        for future in futures:
            future.result()  # re-raises a worker's exception here


def matmul(a, b):
    """``a @ b`` with NumPy's semantics, its work split across threads where it can be:
    ``[..., M, K] @ [K, N]`` by blocks of rows, a stack of products by blocks of the stack."""
    if not isinstance(a, np.ndarray) or a.ndim < 2 or b.ndim < 2:
        return a @ b  # GPU arrays, and products with a vector
    dtype = np.result_type(a, b)
    if b.ndim == 2:  # every row of a gives one row of the result, independently
        a2 = a.reshape(-1, a.shape[-1])
        out = np.empty((len(a2), b.shape[1]), dtype)
        rows(lambda a_rows, out_rows: np.matmul(a_rows, b, out=out_rows), a2, out,
             work_per_row=b.size)
        return out.reshape(a.shape[:-1] + b.shape[1:])
    if a.shape[:-2] == b.shape[:-2]:  # a stack of independent products
        out = np.empty(a.shape[:-1] + b.shape[-1:], dtype)
        rows(lambda a_part, b_part, out_part: np.matmul(a_part, b_part, out=out_part), a, b, out,
             work_per_row=a[0].size * b.shape[-1])
        return out
    return a @ b


def _single_threaded_blas():
    """Tell OpenBLAS (NumPy's BLAS on Linux and Windows) to use one thread; others are left alone."""
    for lib in _openblas_libraries():
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(1)
                break


def _openblas_libraries():
    try:
        with open("/proc/self/maps") as maps:  # Linux: the shared libraries this process loaded
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return []
    libraries = []
    for path in sorted(paths):
        try:
            libraries.append(ctypes.CDLL(path))
        except OSError:
            pass
    return libraries


set_num_threads(os.environ.get("MINILORA_NUM_THREADS", min(os.cpu_count() or 1, 8)))
