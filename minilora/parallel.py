"""Using every CPU core from NumPy: the big ops cut their arrays into blocks of rows for the threads.

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
compete with the threads running the elementwise work, and with every other process on the
machine. Instead minilora runs BLAS single-threaded and splits the products itself: one set of
helper threads for everything, and idle helpers sleep. Which is faster depends on the machine and
on what else runs on it (``python benchmarks/blas_threads.py``, a full fine-tuning step of a small
Llama on 2 cores, split / OpenBLAS's threads): 0.82-0.87 on the machine this was first measured on;
on 2 vCPUs of an AMD EPYC (Zen 4, OpenBLAS 0.3.31) 1.08-1.11 while nothing else ran, and anywhere
from 0.59 to 1.13 (median 0.9 of 6 runs) while other processes shared the two cores (load average
7-10): spinning workers cost most when something else wants their core. So neither wins
everywhere; the split stays, for full fine-tuning and LoRA alike (one scheme, and the LoRA step of
benchmarks/lora_step.py is measured with it): at worst ~10% slower on an idle machine of that kind.
Except with MKL (``minilora.blas``), which torch's products come from: there a Linear's and a LoRA layer's
products and a ``matmul`` of 2-D weights run whole on MKL's threads, as torch's do (MKL's 2 threads split the sum over
K for many shapes -- few rows, long K -- and no split by rows gives those bits); the MKL workers, on a
copy of GNU OpenMP of minilora's own, spin only briefly when idle, then sleep
(``blas.SPINS_BEFORE_SLEEP``; spinning as long as torch's do, a full fine-tuning step took ~50% more CPU
time). Inside a split region MKL runs on one thread (``blas.one_thread_each``): minilora's threads
already take every core. Measured in one process, MKL's threads on / off (``blas.set_product_threads``,
benchmarks/lora_step.py's model, 2 vCPUs of an Intel Xeon, load average ~6): the LoRA step's CPU time
243 / 249 ms, full fine-tuning's 275 / 260 ms.

Nothing of this touches the process at ``import minilora``. BLAS runs on one thread only *while
minilora computes* -- ``with computing():`` around a module's forward, a backward pass and every
split region -- and gets back the caller's thread count afterwards, so a learner's own
``np.linalg.svd`` in the same notebook keeps all its threads. The helper threads start the first
time work is split. Raising glibc's malloc thresholds (``keep_freed_memory``) is an explicit opt-in.

Work smaller than ``MIN_ITEMS`` elements per thread runs inline: waking a thread costs ~20-40
microseconds. (More in a VM whose idle vCPUs halt at once, KVM's ``guest_halt_poll_ns=0``: a split
region that does nothing took ~55 us there, 2 vCPUs of an AMD EPYC; sleeping helpers are also why the
first training step after an idle pause ran ~15% slower than the next ones there, where torch's
spinning OpenMP workers lose ~3%. Helpers spinning in C before they sleep cut the empty region to
~38 us but left the step's time unchanged within its noise: not done. Nor passing the turn both ways
through counters in C that the waiting thread spins on with the GIL given up (round 23, a LoRA step's 89
split regions): the caller saw a block done ~12 us after it was instead of ~35 (median), but a helper still
started ~60-80 us after the hand-over, waiting for the GIL the caller holds while it starts its own block,
and the step's time stayed within its noise, with more CPU time. ``benchmarks/lora_step.py`` reports a step
after idle and steps in a run apart.) Products not run whole on MKL's threads go further
(``products_run``): ``minilora.gemm_pool`` runs a block's whole list of BLAS calls -- a LoRA layer's 3 forward
and 5 backward, a Linear's one -- in C threads, which meet the caller once per op, not at the GIL after
every call (same calls, same numbers). GPU arrays (CuPy) are never split: the GPU is already parallel. A block never splits
again (helpers run their block whole), and while one thread is splitting work, another thread's
ops run unsplit.
"""
import ctypes
import functools
import numbers
import operator
import os
import sys
import threading
import warnings

import numpy as np

from . import blas, cpu_switches, gemm_pool

__all__ = ["rows", "sum_over_rows", "matmul", "matmuls", "input_and_weight_grads", "add", "add_", "multiply", "num_threads",
           "set_num_threads", "computing", "keep_freed_memory", "keep_freed_memory_environ", "product_work", "spans", "slice_elements",
           "parts_for", "products_run", "kernel_rows", "machine_description", "MIN_ITEMS", "MACS_PER_ITEM", "SPLIT_SLICE",
           "SINGLE_PASS", "C_PASS_FROM"]

# Handing a block to a helper costs ~20-40 us (waking a thread); below MIN_ITEMS elements per thread
# of elementwise work (one pass over 64K floats takes about that long) the work runs inline.
MIN_ITEMS = 65536
# A multiply-add inside BLAS costs about 1/32 of an element's pass through a NumPy ufunc: products
# count their work as multiply-adds / MACS_PER_ITEM (so a 1-row product, decoding one token, is
# never split: its threads would each read the whole weight matrix).
MACS_PER_ITEM = 32
# Every NumPy call gives up the GIL and takes it back. When the other thread holds it just then, the
# caller sleeps on a futex and is woken: ~17 us of system time on a KVM guest (AMD EPYC, 2 vCPUs), plus
# the wake-up. Chains of short calls on two threads -- SiLU's backward, AdamW's 14 ufuncs, over
# CHUNK-element (32K) cache slices -- collide on almost every call. Inside a block that runs beside
# other threads' blocks such a chain takes SPLIT_SLICE elements a call (``slice_elements``). Measured
# there (real-time priority), SwiGLU's backward of 704K elements, 1.2-1.35 ms on one thread at any slice
# length, on two: 16K slices 2.6 ms (106 sleeps a call), 32K 1.7 ms (50), 64K 1.1 ms, 128K 0.85 ms,
# 256K 0.78 ms (5), whole blocks 0.77 ms; AdamW on 1M elements, 2.4 ms on one thread, on two: 32K
# 3.4 ms, 64K 2.2 ms, 128K 1.6 ms, 256K 1.4 ms. (This CPU's 32 MiB L3 keeps the longer slices.)
SPLIT_SLICE = 262144
# One pass of one ufunc (an add, a multiply) is cheaper per element than MIN_ITEMS assumes: 256K float32 adds
# take 38 us on one core of an AMD EPYC (Zen 4, AVX-512), a block handed to the helper ~30 us. Measured on its
# 2-vCPU KVM guest (real-time priority, medians of 300, split / whole): 256K elements 100 / 47 us, 688K 174 /
# 142, 1M 238 / 226, 4M 1010 / 1523. So ``add`` and ``multiply`` split from SINGLE_PASS * MIN_ITEMS elements
# (1M; read at each call, as MIN_ITEMS is): a Llama step's residual adds and gradient sums of [1024, 256]
# (25 in a LoRA step at d=256) run whole.
SINGLE_PASS = 16
# In gemm_pool's C threads a hand-over costs microseconds, not the ~100 us of a Python helper's, so float32
# and float64 adds and multiplies go there from C_PASS_FROM elements (a [1024, 256] activation: a Llama step's
# residual adds and gradient sums). Measured on 2 vCPUs of an Intel Xeon (KVM, real-time priority, medians,
# arrays in cache / not): 256K elements 87 / 116 us in the C threads, 126 / 142 whole; 704K 282 / 286 vs
# 325 / 331; 1M 361 vs 466-481 (a Python helper's split: 467). 128K: 42-65 vs 41-71, no gain.
C_PASS_FROM = 262144


class _Helper:
    """A thread that runs one block at a time. Two locks pass the turn back and forth (cheaper
    than a queue: an op waits for its blocks hundreds of times per training step)."""

    def __init__(self):
        self.job = self.error = None
        self.start, self.done = threading.Lock(), threading.Lock()
        self.start.acquire()
        self.done.acquire()
        threading.Thread(target=self._loop, daemon=True, name="minilora-helper").start()

    def _loop(self):
        _local.helper = _local.beside_others = True
        blas.one_thread_each().__enter__()  # (for good: a helper only ever runs blocks of split regions)
        while True:
            self.start.acquire()  # sleeps until run() hands over a job
            fn, block, errors, control = self.job
            cpu_switches.follow(control)  # the caller's MXCSR (flush-to-zero, rounding): it is per thread
            try:
                with np.errstate(**errors):  # the caller's: a 16-bit op silences overflow warnings
                    fn(*block)
            except BaseException as exc:  # handed to the caller in wait()
                self.error = exc
            self.done.release()

    def run(self, fn, block):
        self.job = (fn, block, np.geterr(), cpu_switches.control())  # (NumPy's error settings, MXCSR: per thread)
        self.start.release()

    def wait(self):
        """Until the block is done, whatever happens meanwhile: a Ctrl-C interrupts a waiting ``acquire`` (POSIX),
        and giving up then left the helper writing into the op's arrays after the KeyboardInterrupt, and its
        ``done`` to be taken by the next region's wait, which returned before its own block was computed:
        every later split op silently missing a block. The interruption is raised once the block is done."""
        interrupted = None
        while True:
            try:
                self.done.acquire()
                break
            except BaseException as exc:  # (KeyboardInterrupt, or whatever a signal handler raised)
                interrupted = interrupted or exc
        error, self.error, self.job = self.error, None, None
        if error is not None:
            raise error
        if interrupted is not None:
            raise interrupted


_local = threading.local()  # .helper is True in helper threads: they never split work again;
# .beside_others while a thread runs blocks of a split region (helpers always): see slice_elements
_region = threading.Lock()  # one split region at a time; a second caller runs its work inline
_helpers = []  # created on demand and never stopped (asleep when idle)
_threads = 1  # the calling thread plus _threads - 1 helpers


# ------------------------------------------------------------------------------------------------
# While minilora computes: BLAS on one thread, the caller's setting restored afterwards
# ------------------------------------------------------------------------------------------------
# (reentrant: a signal handler runs in the main thread between two of its bytecodes, also inside the lock, and a
# handler that computes -- a checkpoint saved on SIGTERM -- would wait forever for the lock its own thread holds)
_scope_lock = threading.RLock()
_scope_threads = 0  # threads inside a computing() scope right now
_saved_blas_threads = None  # the caller's OpenBLAS thread count, put back when the last scope ends


def _enter():
    depth = getattr(_local, "depth", 0)  # this thread's nesting: module calls nest deeply, cheaply
    _local.depth = depth + 1
    if depth:
        return
    global _scope_threads, _saved_blas_threads
    with _scope_lock:  # the first thread in sets BLAS to one thread; the last one out restores it
        if _scope_threads == 0:
            before = blas.get_num_threads()
            if before is not None and before != 1:
                blas.set_num_threads(1)
                _saved_blas_threads = before
        _scope_threads += 1


def _leave():
    _local.depth -= 1
    if _local.depth:
        return
    global _scope_threads, _saved_blas_threads
    with _scope_lock:
        _scope_threads -= 1
        if _scope_threads == 0 and _saved_blas_threads is not None:
            blas.set_num_threads(_saved_blas_threads)
            _saved_blas_threads = None


class computing:
    """``with computing():`` -- within this block NumPy's OpenBLAS runs on one thread (minilora's
    helper threads split the work instead); the thread count it had before comes back when the
    outermost block ends.

    Costs two calls into OpenBLAS per outermost block (~0.5 us); nested blocks only count. A plain
    class rather than a generator: every module call opens one.
    """

    __slots__ = ()

    def __enter__(self):
        _enter()
        return self

    def __exit__(self, *exc_info):
        _leave()
        return False


# keep_freed_memory's settings: blocks up to 32 MiB come from the heap (not mmap), and up to 1 GiB of freed
# heap is kept for reuse rather than trimmed
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 32 * 2**20, 2**30


def keep_freed_memory():
    """Opt in: let glibc's malloc keep freed memory for reuse instead of handing it back to the OS.

    Every op allocates NumPy arrays of megabytes and frees them moments later. By default glibc
    returns such blocks to the kernel (munmap, or trimming the top of the heap), so the next
    allocation touches fresh pages: one page fault per 4 KiB. In a training step of the small Llama
    of ``benchmarks/train_step.py`` that was ~18,000 page faults, 10-20% of the step's CPU time.
    Higher mmap and trim thresholds keep those pages in the process for the next op (the reason
    PyTorch users preload jemalloc or tcmalloc). This changes the whole process and cannot be
    undone (glibc has no way to read the old settings back), so minilora never does it by itself:
    ``minilora train`` and the benchmarks call it; a script of yours may too. Linux/glibc only;
    returns whether the settings were applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, _MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
        ok &= libc.mallopt(-1, _TRIM_THRESHOLD)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): keep its defaults
        return False
    return bool(ok)


def keep_freed_memory_environ():
    """``keep_freed_memory``'s settings for a process about to start: glibc's environment variables, which it
    reads as the process starts (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), for a process that,
    like ``minilora train``, is all minilora's -- the test run's notebook kernels (notebooks/build_notebooks.py)."""
    return {"MALLOC_MMAP_THRESHOLD_": str(_MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(_TRIM_THRESHOLD)}


def num_threads():
    """How many threads the CPU ops use (``MINILORA_NUM_THREADS``, default: all cores, at most 8)."""
    return _threads


def machine_description():
    """The machine a timing was taken on, for a notebook or a benchmark to print beside it: the CPU's model (Linux's
    /proc/cpuinfo, else ``platform.processor()``), the cores this process may use and minilora's thread count, e.g.
    ``"Intel(R) Xeon(R) Platinum 8488C, 2 cores usable, 1 minilora thread"``. A time means little without it."""
    import platform
    model = platform.processor() or platform.machine() or "an unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:  # (not Linux)
        pass
    cores = _usable_cores()
    return f"{model}, {cores} core{'s' if cores != 1 else ''} usable, {_threads} minilora thread{'s' if _threads != 1 else ''}"


def set_num_threads(n):
    """Use ``n`` threads for CPU ops (as ``torch.set_num_threads``); inside them BLAS runs on one
    thread while minilora computes (``computing``). Nothing starts here: the helpers start when work is
    first split that many ways (as torch's pool does), as many as the system lets start."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):  # as torch: 2.5 or "4" is refused
        raise TypeError(f"set_num_threads expects an int, got {n!r} ({type(n).__name__})")
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: need at least 1 thread, got {n}")
    if n > _MAX_THREADS:  # (torch's own bound; started eagerly, 2**40 made threads until the OS refused)
        raise ValueError(f"set_num_threads: {n} threads do not fit torch's int32 count (at most {_MAX_THREADS})")
    global _threads
    blas.set_product_threads(n)  # (MKL's threads for a product minilora runs whole: as torch's)
    _threads = n  # (no lock: a region reads it once, and a signal handler calling this inside one waited forever)


_MAX_THREADS = 2**31 - 1


def _start_helpers(count):
    """Make sure ``count`` helper threads exist, as far as the system lets them start (its limit on threads
    or memory): a block whose helper is missing runs in the calling thread (``rows``), the same numbers."""
    try:
        while len(_helpers) < count:
            _helpers.append(_Helper())
    except RuntimeError as exc:  # ("can't start new thread")
        warnings.warn(f"minilora: {len(_helpers) + 1} threads of the {_threads} set run the CPU ops' blocks: "
                      f"the system started no more ({exc})", RuntimeWarning, stacklevel=3)


def rows(fn, *arrays, work_per_row=None):
    """Call ``fn(*blocks)`` on matching blocks of rows (first axis) of ``arrays``, in parallel.

    All arrays need the same first dimension; ``None`` passes through as ``None``, and a Python
    list is split like an array (into sub-lists). ``work_per_row`` (default: the elements of one
    row of the first array) decides whether the work is big enough to be worth splitting. ``fn``'s
    return values are dropped: it writes its results into output arrays passed as blocks.

    The rows are cut into one block per thread, and thread ``i`` runs block ``i`` (the calling thread
    the first), as OpenMP's static schedule: each step of ``fn`` is one NumPy call per thread (each
    call gives up the GIL and takes it back, and the threads queue for it between calls: 4 smaller
    blocks per thread, taken in turn, made a Llama training step 3-5% slower on 2 cores), and the
    rows a thread wrote in one op are the rows it reads in the next, in its core's cache. A block
    whose helper has not started when the calling thread is done with its own (on a shared machine a
    helper's core is often taken for a while) is run by the calling thread rather than waited for.
    """
    n = len(arrays[0])
    if work_per_row is None:
        work_per_row = arrays[0][0].size if n else 0
    parts = parts_for(n, work_per_row)
    if parts < 2:  # the common small case first: decoding runs it per op
        fn(*arrays)
        return
    on_cpu = all(a is None or isinstance(a, (np.ndarray, list)) for a in arrays)
    if not on_cpu or getattr(_local, "helper", False) or not _region.acquire(False):
        fn(*arrays)
        return
    _enter()  # BLAS on one thread while the blocks run side by side
    _local.beside_others = True
    try:
        _start_helpers(parts - 1)
        bounds = [n * i // parts for i in range(parts + 1)]
        blocks = [[None if a is None else a[start:stop] for a in arrays] for start, stop in zip(bounds, bounds[1:])]
        not_started = set(range(parts))  # (set.remove is atomic: each block runs once)

        def run_block(i):
            try:
                not_started.remove(i)
            except KeyError:  # the calling thread took it: this helper started late
                return
            with blas.one_thread_each():  # (the blocks already use every core)
                fn(*blocks[i])
        helpers = _helpers[:parts - 1]
        for i, helper in enumerate(helpers, 1):
            helper.run(run_block, (i,))
        try:
            for i in range(parts):  # its own block, then those whose helper has not started yet
                run_block(i)
        finally:
            errors = []
            for helper in helpers:  # wait for every block, even after an error
                try:
                    helper.wait()
                except BaseException as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]
    finally:
        _local.beside_others = False
        _leave()
        _region.release()


def parts_for(n, work_per_row):
    """Into how many blocks ``rows`` cuts ``n`` rows of ``work_per_row`` items each: one per thread, fewer
    when the work is small (1: run whole)."""
    pieces = (n * work_per_row) // MIN_ITEMS  # how many blocks the work is worth
    return 1 if pieces < 2 or _threads == 1 else min(_threads, n, pieces)


def products_run(n, products, work_per_row):
    """Run ``products`` (``gemm_pool.Product``s: BLAS calls on rows of the same ``n``-row arrays) on blocks of
    rows in ``gemm_pool``'s C threads, as ``rows`` would cut them; False (nothing done) where ``rows`` would
    run its work whole (small work, one thread, in a helper's block, while another thread's region runs),
    or where the pool cannot take the products: the caller then runs its NumPy code (the same numbers).
    (The C threads compute under the caller's MXCSR, as the helpers do: ``cpu_switches``.)"""
    parts = parts_for(n, work_per_row)
    if parts < 2 or not gemm_pool.available():
        return False
    if getattr(_local, "helper", False) or not _region.acquire(False):
        return False
    _enter()  # BLAS on one thread: the C threads split the work
    try:
        return gemm_pool.run(n, parts, products)
    finally:
        _leave()
        _region.release()


def kernel_rows(n, kernel, work_per_row):
    """Run ``kernel`` (a ``gemm_pool.RowKernel``: compiled C that computes rows [first, last) of an op) on rows
    [0, n): on blocks in ``gemm_pool``'s C threads where ``rows`` would split the work (``products_run``), else
    whole in this thread (one call; the same numbers either way, each row's alone)."""
    if not products_run(n, [kernel], work_per_row):
        kernel(0, n)


def slice_elements():
    """How many elements each NumPy call of a multi-pass chain takes, ``device.cache_slices``' ``step``:
    ``SPLIT_SLICE`` in a block that runs beside other threads' blocks, where fewer, longer calls keep
    the threads from queueing for the GIL (see SPLIT_SLICE); else ``None``, cache_slices' own cache-sized
    ``CHUNK``."""
    return SPLIT_SLICE if getattr(_local, "beside_others", False) else None


def spans(fn, sizes):
    """``fn(spans)`` on each thread's equal share of the elements of items of ``sizes`` elements (arrays
    that an elementwise chain updates, such as AdamW's parameters), the shares run side by side.

    The work is shared out by elements, not by items: the items, laid end to end, are cut into one
    share per thread of (nearly) the same number of elements, and a share's ``spans`` is its list of
    ``(item, start, stop)`` -- a thread may get the end of one item and the start of the next. So a
    few large items and many small ones divide evenly, and the threads are used only where the
    elements (not the items) are worth it: at least ``MIN_ITEMS`` per thread, else ``fn`` runs inline
    on every item whole. Items of no elements are left out.
    """
    total = sum(sizes)
    # A chain of short calls beside another thread's pays from about 2 * MIN_ITEMS elements a thread
    # (AdamW: 262K elements in 0.68 ms on one thread, 0.58 ms on two; 131K: 0.44 ms, 0.52 ms)
    parts = max(1, min(_threads, total // (2 * MIN_ITEMS)))
    edges = [total * k // parts for k in range(parts + 1)]
    shares = [[] for _ in range(parts)]
    share, offset = 0, 0
    for item, size in enumerate(sizes):
        start = 0
        while start < size:  # cut the item at the share edges that fall inside it
            while offset + start >= edges[share + 1]:
                share += 1
            stop = min(size, edges[share + 1] - offset)
            shares[share].append((item, start, stop))
            start = stop
        offset += size
    if parts == 1:
        fn(shares[0])
        return
    rows(lambda some: fn([span for share in some for span in share]), shares, work_per_row=total // parts)


def sum_over_rows(fn, *arrays, **options):
    """``rows()`` for work that also sums over the rows, such as a weight's gradient.

    ``fn(*blocks)`` returns a tuple of partial results for its block (arrays, or ``None``); this
    returns the tuple of their sums over all blocks. The partial results are added in the order of
    their blocks' rows, so every run adds the same numbers in the same order (threads finish in any
    order). Each block computes its part while its rows are still in the cache.
    """
    if len(arrays[0]) == 0:
        return fn(*arrays)
    partial = {}

    def run(first_row, *blocks):
        partial[int(first_row[0])] = fn(*blocks)
    options.setdefault("work_per_row", arrays[0][0].size)  # of the first array, not of the row numbers
    rows(run, np.arange(len(arrays[0])), *arrays, **options)
    in_order = [partial[row] for row in sorted(partial)]
    return tuple(None if parts[0] is None else functools.reduce(operator.add, parts)
                 for parts in zip(*in_order))


def product_work(macs):
    """A product's multiply-adds in elementwise work items (at least 1)."""
    return max(1, macs // MACS_PER_ITEM)


def matmul(a, b):
    """``a @ b`` with NumPy's semantics, its work split across threads where it can be:
    ``[..., M, K] @ [K, N]`` by blocks of rows, a stack of products by blocks of the stack."""
    if (type(a) is not np.ndarray or a.ndim < 2 or b.ndim < 2
            or a.size * b.shape[-1] < 2 * MIN_ITEMS * MACS_PER_ITEM  # multiply-adds: rows * K * N
            or b.ndim == 2 and blas.threads_products()):
        return blas.matmul(a, b)  # GPU arrays, products with a vector, too small to split, or MKL's threads split them
    dtype = np.result_type(a, b)
    if b.ndim == 2:  # every row of a gives one row of the result, independently
        a2 = a.reshape(-1, a.shape[-1])
        out = np.empty((len(a2), b.shape[1]), dtype)
        work = product_work(b.size)
        if not products_run(len(a2), [gemm_pool.Product(a2, b, out)], work):  # (mixed dtypes: declined)
            rows(lambda a_rows, out_rows: blas.matmul(a_rows, b, out=out_rows), a2, out, work_per_row=work)
        return out.reshape(a.shape[:-1] + b.shape[1:])
    if a.shape[:-2] == b.shape[:-2]:  # a stack of independent products
        out = np.empty(a.shape[:-1] + b.shape[-1:], dtype)
        rows(lambda a_part, b_part, out_part: blas.matmul(a_part, b_part, out=out_part), a, b, out,
             work_per_row=product_work(a[0].size * b.shape[-1]))
        return out
    return blas.matmul(a, b)


def matmul_into(out, a, b):
    """``out += a @ b`` in place (``out`` [M, N] C-contiguous, ``a`` [M, K], ``b`` [K, N], one float dtype), BLAS's
    beta = 1: the sums start from out's values, as torch's addmm and Linear start from the bias (MKL adds each block of
    K into C: starting from the bias or adding it after are different roundings). Split by rows as ``matmul``."""
    work = product_work(b.size)
    if blas.threads_products():  # (MKL's threads split it, as torch's)
        return blas.gemm(a, b, out, beta=1.0)
    if not products_run(len(a), [gemm_pool.Product(a, b, out, beta=1.0)], work):
        rows(lambda a_rows, out_rows: blas.gemm(a_rows, b, out_rows, beta=1.0), a, out, work_per_row=work)
    return out


def matmuls(*pairs):
    """``[a @ b for a, b in pairs]`` for 2-D arrays: independent products computed side by side
    (a pair that is ``None`` gives ``None``).

    Each product is cut into fewer row blocks (``ceil(threads / products)``), so with two threads
    and two products each thread computes one whole product: no operand is packed twice and
    there is one hand-over instead of two. (For a linear layer's backward, ``dX = dY W`` next to
    ``dW = dY^T X``, this measured 5% faster on a Llama step than splitting each product in turn;
    ``input_and_weight_grads`` runs ``Linear``'s backward this way. ``benchmarks/gemm.py`` times it.)
    """
    todo = [pair for pair in pairs if pair is not None]
    small = product_work(sum(a.shape[0] * a.shape[1] * b.shape[1] for a, b in todo)) < 2 * MIN_ITEMS
    if small or not all(isinstance(a, np.ndarray) for pair in todo for a in pair):
        results = iter([blas.matmul(a, b) for a, b in todo])
    else:
        outs = [np.empty((a.shape[0], b.shape[1]), np.result_type(a, b)) for a, b in todo]
        blocks_each = -(-_threads // max(len(todo), 1))
        jobs = []
        for (a, b), out in zip(todo, outs):
            bounds = [len(a) * i // blocks_each for i in range(blocks_each + 1)]
            jobs += [(a[start:stop], b, out[start:stop]) for start, stop in zip(bounds, bounds[1:])]
        if jobs:
            work = product_work(sum(a.shape[0] * a.shape[1] * b.shape[1] for a, b in todo) // len(jobs))
            rows(lambda some: [blas.matmul(a, b, out=out) for a, b, out in some], jobs,
                 work_per_row=work)
        results = iter(outs)
    return [None if pair is None else next(results) for pair in pairs]


def input_and_weight_grads(fn, g, x, gx, w, need_w, need_b, as_products=None):
    """A linear layer's backward with ``dX = dY W`` and ``dW = dY^T X`` computed side by side, as
    ``matmuls`` does: ``fn(g, x, gx, w, need_w, need_b)`` is the serial backward (it fills ``gx``,
    unless None, and returns ``(gw, gb)``); this calls it on pieces and returns ``(gw, gb)``.

    The two products are independent, so each is cut on its own: ``gx`` by blocks of rows of ``g``
    (``fn(g[rows], None, gx[rows], w, False, False)``), ``gw`` and ``gb`` by blocks of output features,
    columns of ``g`` (``fn(g[:, cols], x, None, w, need_w, need_b)``: rows ``cols`` of ``gw``). With
    two threads each thread computes one whole product, and no block's ``gw`` has to be added to
    another's (``sum_over_rows`` would split both products by rows: ~5% slower on a Llama step's
    products, ``benchmarks/gemm.py``). Small work, GPU arrays and one thread: one call of ``fn``.
    ``as_products(g, x, gx, w, gw)``: ``fn``'s products as ``gemm_pool.Product``s (``gw``: where the weight
    gradient goes, or None), so the same calls run in gemm_pool's C threads (``_side_by_side``).
    """
    products = (gx is not None) + bool(need_w)
    work = product_work(len(g) * w.size * products)
    if (products == 0 or type(g) is not np.ndarray or work < 2 * MIN_ITEMS or _threads == 1
            or blas.threads_products()):
        return fn(g, x, gx, w, need_w, need_b)  # (MKL's threads: each product whole in turn, as torch's backward)
    blocks_each = -(-_threads // products)  # all the blocks together: one per thread
    calls = []
    if gx is not None:
        for start, stop in _bounds(len(g), blocks_each):
            calls.append(functools.partial(fn, g[start:stop], None, gx[start:stop], w, False, False))
    first_weight_call = len(calls)
    if need_w or need_b:
        for start, stop in _bounds(g.shape[1], blocks_each if need_w else 1):
            calls.append(functools.partial(fn, g[:, start:stop], x, None, w, need_w, need_b))
    if as_products is not None and not need_b:
        done = _side_by_side(as_products, g, x, gx, w, need_w, calls[:first_weight_call], blocks_each, work)
        if done is not None:
            return done, None
    results = [None] * len(calls)

    def run(some):
        for i in some:
            results[i] = calls[i]()
    rows(run, list(range(len(calls))), work_per_row=work // len(calls))
    parts = results[first_weight_call:]
    if not parts:
        return None, None
    return tuple(None if blocks[0] is None else blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
                 for blocks in zip(*parts))


def _side_by_side(as_products, g, x, gx, w, need_w, input_calls, blocks_each, work):
    """``input_and_weight_grads``' calls as whole products in gemm_pool's C threads, each in the block the
    Python threads would run it in; the weight gradient, or None where the pool did not run them."""
    gw = np.empty((g.shape[1], x.shape[1]), g.dtype) if need_w else None
    pieces = [as_products(g[start:stop], None, gx[start:stop], w, None) for start, stop in
              _bounds(len(g), blocks_each)] if input_calls else []
    if need_w:
        pieces += [as_products(g[:, start:stop], x, None, w, gw[start:stop])
                   for start, stop in _bounds(g.shape[1], blocks_each)]
    parts = parts_for(len(pieces), work // len(pieces))
    for block, (start, stop) in enumerate(_bounds(len(pieces), parts)):  # as rows() cuts the list of calls
        for piece in pieces[start:stop]:
            for product in piece:
                product.split, product.block = "whole", block
    every = [product for piece in pieces for product in piece]
    return gw if products_run(len(pieces), every, work // len(pieces)) else None


def _bounds(n, count):
    """``count`` (at most ``n``) consecutive ``(start, stop)`` ranges covering ``range(n)``."""
    count = max(1, min(count, n))
    edges = [n * i // count for i in range(count + 1)]
    return list(zip(edges, edges[1:]))


def _elementwise(ufunc, a, b, out=None):
    """``ufunc(a, b)`` on flat blocks in parallel, for two large C-contiguous NumPy arrays of one
    shape; ``None`` for anything else (small, broadcasting, strided or GPU arrays: the caller
    computes those whole). The cheap checks come first: the autograd engine calls this per gradient.
    ``out``: a itself (in place), else a new array."""
    if (type(a) is not np.ndarray or a.size < C_PASS_FROM or type(b) is not np.ndarray
            or a.shape != b.shape or not (a.flags.c_contiguous and b.flags.c_contiguous)
            or (a.size < SINGLE_PASS * MIN_ITEMS and not gemm_pool.available())):
        return None
    out = np.empty(a.shape, np.result_type(a, b)) if out is None else out
    flat = (a.reshape(-1), b.reshape(-1), out.reshape(-1))
    if products_run(a.size, [gemm_pool.Product(*flat, split=ufunc.__name__)], work_per_row=MIN_ITEMS):
        return out  # (in gemm_pool's C threads: a hand-over of microseconds)
    if a.size < SINGLE_PASS * MIN_ITEMS:
        return ufunc(a, b, out=out)  # (whole: a Python helper's hand-over costs more than it saves)
    rows(lambda x, y, o: ufunc(x, y, out=o), *flat, work_per_row=1)
    return out


def add(a, b):
    """``a + b``, split across threads when both are large arrays of the same shape."""
    if getattr(a, "size", 0) < C_PASS_FROM:  # (small, the common case of an op's call: no second call)
        return a + b
    out = _elementwise(np.add, a, b)
    return a + b if out is None else out


def add_(a, b):
    """``a += b`` in place (``a`` an array of ``b``'s shape and dtype), split across threads as ``add``."""
    if getattr(a, "size", 0) < C_PASS_FROM or _elementwise(np.add, a, b, out=a) is None:
        a += b
    return a


def multiply(a, b):
    """``a * b``, split across threads when both are large arrays of the same shape."""
    if getattr(a, "size", 0) < C_PASS_FROM:
        return a * b
    out = _elementwise(np.multiply, a, b)
    return a * b if out is None else out


def _after_fork_in_child():
    """A forked child has only the thread that forked: start over with fresh helpers (a helper
    that no longer exists would never finish its block) and a free region lock."""
    global _region, _scope_lock, _scope_threads
    _region = threading.Lock()
    _scope_lock = threading.RLock()
    _scope_threads = 1 if getattr(_local, "depth", 0) else 0  # only the forking thread came along
    _helpers.clear()  # new ones start when the child first splits work


def _initial_threads():
    """``MINILORA_NUM_THREADS`` if set, else the cores this process may run on, at most 8."""
    value = os.environ.get("MINILORA_NUM_THREADS")
    if value is not None:
        if not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"MINILORA_NUM_THREADS must be a whole number >= 1, got {value!r}")
        if int(value) > _MAX_THREADS:
            raise ValueError(f"MINILORA_NUM_THREADS must be at most {_MAX_THREADS} (torch's int32), got {value!r}")
        return int(value)
    return min(_usable_cores(), 8)


def _usable_cores():
    """The cores this process may run on (Linux: its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
_threads = _initial_threads()  # just a number: no thread starts and nothing else changes at import
blas.set_product_threads(_threads)
