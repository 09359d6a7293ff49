"""Products split across threads in C: a LoRA layer's blocks of rows without Python's GIL.

``minilora.parallel`` splits an op's rows between Python threads; each thread's NumPy calls give the GIL
up while they compute and take it back after. A LoRA layer's block makes 3 BLAS calls forward and 5
backward, and each time a thread wants the GIL back while the other holds it, it sleeps and is woken:
~50 us a time on a 2-vCPU KVM guest, where a block computes for 300-1500 us; handing a block to a
sleeping Python helper and getting it back costs ~100 us more (2 vCPUs of an Intel Xeon: a region of two
280 us products took ~420 us). ``native/gemm_pool.c`` holds the same products as a list and runs the whole
list on each block in C threads that never touch Python (and spin ``SPIN_US`` for the next job before they
sleep, as PyTorch's OpenMP workers do), so the threads meet once per layer, within microseconds.

    P = gemm_pool.Product
    done = parallel.products_run(len(X), [P(X, A.T, U), P(X, W0.T, Y), P(U, B.T, Y, alpha=s, beta=1.0)],
                                 work_per_row=parallel.product_work(W0.size))

Its users: a LoRA layer's forward and backward (``ops/lora.py``), a Linear's forward (``parallel.matmul``)
and backward (``parallel.input_and_weight_grads``: dX and dW side by side, ``split="whole"``), large
adds and multiplies (``parallel.add``: the autograd engine's gradient sums), and compiled row kernels
(``RowKernel``, through ``parallel.kernel_rows``: RMSNorm's forward and backward, ``float32_sums``), which
gain most: a Python helper's hand-over (~100 us) cost more than such a kernel's whole [1024, 256] block. ``parallel.products_run``
decides whether to split (as ``parallel.rows`` does) and calls ``run`` here, which returns False when it
did nothing -- no compiler (``MINILORA_NATIVE=0``), ``MINILORA_GEMM_POOL=0``, an operand BLAS cannot take
as it is (a strided view, a dtype other than float32/64, a one-column product, which NumPy computes as a
matrix-vector product) -- and the caller runs its NumPy code, which computes the same numbers: each
product is the CBLAS call ``np.matmul`` / ``blas.gemm`` makes on the same block of rows (same shapes,
strides and order), so the results agree to the bit (tests/test_gemm_pool_r25.py).
"""
import ctypes
import os

import numpy as np

from . import blas, native

__all__ = ["Product", "RowKernel", "run", "available", "SPIN_US", "MAX_BLOCKS"]

SPLITS = {"rows": 0, "sum": 1, "scale": 2, "whole": 3, "add": 4, "multiply": 5, "kernel": 6}  # gemm_pool.c's kinds
# How long a worker spins for the next job before it sleeps. The LoRA layers of one block follow each other
# within ~20-50 us of Python (q, k, v; gate, up), the row kernels (RMSNorm, RoPE, SwiGLU) within ~30-150 us of
# the ops between them, and waking a sleeping worker costs ~20 us to the caller and ~30 us of latency -- so long
# that the caller often ran the worker's block itself. With only the products in the pool (round 25) 0, 50 and
# 200 us gave the same step within the noise; with the row kernels too (round 26; benchmarks/lora_step.py, 2 vCPUs
# of an Intel Xeon, real-time priority, LoRA / PEFT in a run, two runs each): 50 us 1.08-1.09, 300 us 1.02,
# 1000 us 1.02-1.03; F.rms_norm of [8, 128, 256] in a loop 205 -> 130 us. (PyTorch's OpenMP workers spin longer.)
# A longer spin costs CPU time that another process could use: at most this much after each split op.
SPIN_US = 300


class _Product(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in
                ("split", "is_double", "trans_a", "trans_b", "M", "N", "K", "lda", "ldb", "ldc", "c_part", "block")] + [
        ("alpha", ctypes.c_double), ("beta", ctypes.c_double),
        ("a", ctypes.c_void_p), ("b", ctypes.c_void_p), ("c", ctypes.c_void_p),
        ("kernel", ctypes.c_void_p), ("kernel_args", ctypes.c_void_p)]


_MAX_OPS = 8
MAX_BLOCKS = 64  # gemm_pool.c's slots: the caller and 63 workers (more blocks: declined, NumPy runs them)


class _Job(ctypes.Structure):
    _fields_ = [("sgemm", ctypes.c_void_p), ("dgemm", ctypes.c_void_p), ("n_ops", ctypes.c_int64),
                ("rows", ctypes.c_int64), ("parts", ctypes.c_int64), ("ops", _Product * _MAX_OPS)]


class Product:
    """One step of a block: ``out = alpha * a @ b + beta * out`` (``split="rows"``: a's and out's rows are
    the block's), the block's share of a sum over rows into ``out[block]`` (``split="sum"``: a is
    ``[M, rows]``, b ``[rows, N]``, out ``[parts, M, N]``), ``out[rows] *= alpha`` (``split="scale"``),
    the whole product in block ``block`` alone (``split="whole"``: products that run side by side), or no
    product: ``out = a + b`` / ``a * b`` on the block's elements of flat arrays, or its rows of 2-D ones
    (``split="add"``, ``"multiply"``; ``out`` may be ``a`` itself: in place)."""

    __slots__ = ("a", "b", "out", "alpha", "beta", "split", "block")

    def __init__(self, a, b, out, alpha=1.0, beta=0.0, split="rows", block=0):
        self.a, self.b, self.out, self.alpha, self.beta, self.split, self.block = a, b, out, alpha, beta, split, block


class RowKernel:
    """A compiled C function of another native library, ``void f(const void *args, int64_t first, int64_t
    last)``, that computes rows [first, last) of an op from ``args`` (a ctypes structure of its own: arrays'
    addresses, sizes): the pool calls it on each block's rows; called as ``kernel(first, last)``, it runs here.
    ``calls_blas``: the kernel calls BLAS itself (compiled_attention's), so it needs BLAS on one thread as products do."""

    __slots__ = ("function", "args", "calls_blas")

    def __init__(self, function, args, calls_blas=False):
        self.function, self.args, self.calls_blas = function, args, calls_blas

    def __call__(self, first, last):
        self.function(ctypes.byref(self.args), first, last)


_library = None
_loaded = False


def _pool():
    """gemm_pool.c's library, compiled on first use; None where it cannot be."""
    global _library, _loaded
    if not _loaded:
        _loaded = True
        library = native.load(native.GEMM_POOL)
        if library is not None:
            library.ml_pool_start.argtypes = [ctypes.c_int, ctypes.c_int64]
            library.ml_pool_run.argtypes = [ctypes.c_void_p]
            library.ml_pool_run.restype = ctypes.c_int
            if library.ml_pool_max_blocks() != MAX_BLOCKS or library.ml_pool_max_ops() != _MAX_OPS:
                raise RuntimeError(f"{native.GEMM_POOL.name} and gemm_pool.py disagree on the pool's sizes")
            _library = library
    return _library


def available():
    """Whether ``run`` can split products here (OpenBLAS's CBLAS found, the C file compiled)."""
    return (os.environ.get("MINILORA_GEMM_POOL", "1") != "0" and blas.has_direct_gemm(np.float32)
            and _pool() is not None)


def _fill(op, p, rows, parts, dtype):
    """``_Product`` fields for ``p``; False when an operand is not one CBLAS takes as it is."""
    if isinstance(p, RowKernel):  # (the kernel's own checks were made where its arguments were)
        op.split = SPLITS["kernel"]
        op.kernel, op.kernel_args = ctypes.cast(p.function, ctypes.c_void_p).value, ctypes.addressof(p.args)
        return True
    arrays = (p.out,) if p.split == "scale" else (p.a, p.b, p.out)
    if any(type(x) is not np.ndarray or x.dtype != dtype or not x.flags.aligned for x in arrays):
        return False
    if p.split in ("add", "multiply"):  # flat arrays of ``rows`` elements, or [rows, N] arrays (a block: its rows)
        # (out may be a itself: each element is read before it is written, so ``a += b`` in place is safe)
        if not (p.a.ndim == p.b.ndim == p.out.ndim in (1, 2) and p.a.shape == p.b.shape == p.out.shape
                and len(p.a) == rows and all(x.flags.c_contiguous for x in arrays)) or (
                    np.may_share_memory(p.out, p.a) and p.out.ctypes.data != p.a.ctypes.data):
            return False
        op.split, op.is_double = SPLITS[p.split], dtype == np.float64
        op.N = 1 if p.a.ndim == 1 else p.a.shape[1]
        op.a, op.b, op.c = p.a.ctypes.data, p.b.ctypes.data, p.out.ctypes.data
        return not np.may_share_memory(p.out, p.b)
    out = p.out[0] if p.split == "sum" else p.out
    # (a sum's out has one slab per block: the caller counted the blocks before parallel.products_run did, and
    # another thread's set_num_threads in between would leave slabs unwritten or blocks writing past the end)
    if out.ndim != 2 or not out.flags.c_contiguous or (p.split == "sum" and (not p.out.flags.c_contiguous
                                                                             or len(p.out) != parts)):
        return False
    op.split, op.block = SPLITS[p.split], p.block
    if p.split == "whole" and not 0 <= p.block < parts or p.split != "whole" and rows // parts < 2:
        return False
    op.is_double = dtype == np.float64
    op.M, op.N = out.shape
    op.ldc, op.c_part, op.c = out.shape[1], out.size, p.out.ctypes.data
    op.alpha, op.beta = float(p.alpha), float(p.beta)
    if p.split == "scale":
        return op.M == rows
    forms = blas.operand_form(p.a), blas.operand_form(p.b)
    if (None in forms or np.may_share_memory(p.out, p.a) or np.may_share_memory(p.out, p.b)
            or _numpy_calls_syrk(p, rows, parts)):
        return False
    (op.trans_a, op.lda), (op.trans_b, op.ldb) = forms
    op.K, op.a, op.b = p.a.shape[1], p.a.ctypes.data, p.b.ctypes.data
    if p.a.shape[0] != op.M or p.b.shape != (op.K, op.N):
        return False
    # A one-row or one-column product is a matrix-vector product in NumPy (gemv): not the same call.
    if p.split == "whole":
        return min(op.M, op.N, op.K) >= 2
    return min(op.N, op.M if p.split == "sum" else 2, op.K if p.split == "rows" else 2) >= 2 and (
        op.M == rows if p.split == "rows" else op.K == rows)


def _numpy_calls_syrk(p, rows, parts):
    """Whether NumPy's matmul computes one of ``p``'s blocks as a matrix times its own transpose (the same
    memory, the strides swapped: a Linear's dW = dY^T X where dY is X), which it hands to BLAS's syrk (one
    triangle, mirrored), not gemm: other sums, other roundings. The pool declines those; NumPy runs them."""
    a, b = p.a, p.b
    if a.strides != b.strides[::-1]:  # (almost every product stops here)
        return False
    blocks = [(rows * i // parts, rows * (i + 1) // parts) for i in range(parts)]  # as gemm_pool.c's run_block
    if p.split == "whole":
        starts = [(0, 0, len(a))]  # (a's offset, b's offset, a's rows) of each NumPy call
    elif p.split == "rows":
        starts = [(first * a.strides[0], 0, last - first) for first, last in blocks]
    else:  # "sum": block i's terms of the sum, columns of a and rows of b
        starts = [(first * a.strides[1], first * b.strides[0], len(a)) for first, _ in blocks]
    return any(a.ctypes.data + at_a == b.ctypes.data + at_b and m == b.shape[1] for at_a, at_b, m in starts)


def run(rows, parts, products):
    """Run ``products`` (a list of ``Product``) on ``parts`` blocks of ``rows`` rows, block 0 in the calling
    thread, the others in the C threads; False (nothing done) when the products are not ones the pool runs.
    One caller at a time (``parallel.products_run`` holds the split region); a second one, more blocks than
    the pool has threads for (``MAX_BLOCKS``), or products while OpenBLAS's own threads are on (``products_run``
    turns them off), is refused: False -- more blocks before any worker starts (set_num_threads(65) started
    63 C threads that no job could use)."""
    dtype = next((p.out.dtype for p in products if isinstance(p, Product)), np.dtype(np.float32))
    if (not available() or len(products) > _MAX_OPS or dtype not in (np.float32, np.float64)
            or parts > MAX_BLOCKS):
        return False  # (available: MINILORA_GEMM_POOL=0, no compiler, or another thread still compiling it)
    if any(isinstance(p, Product) or p.calls_blas for p in products) and blas.get_num_threads() not in (None, 1):
        # Each block's BLAS call must run on its one thread (parallel.products_run sets BLAS to one thread). Called
        # with OpenBLAS's own threads on, every block's call started them: 2 x 2 threads on 2 cores, and under a
        # real-time scheduler (chrt -f) the spinning threads never let each other run: a hang at 200% CPU.
        return False
    job = _Job(sgemm=blas.gemm_address(np.float32), dgemm=blas.gemm_address(np.float64), n_ops=len(products),
               rows=rows, parts=parts)
    for op, p in zip(job.ops, products):
        if not _fill(op, p, rows, parts, dtype):
            return False
    pool = _pool()
    pool.ml_pool_start(parts - 1, SPIN_US * 1000)
    return pool.ml_pool_run(ctypes.byref(job)) == 0  # (1: refused, nothing done: too many blocks, or busy)
