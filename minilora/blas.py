"""The BLAS (Intel's MKL where installed, else NumPy's own OpenBLAS), called directly: for torch's bits, and for the
one thing ``np.matmul`` cannot say: accumulate.

BLAS's matrix product is ``C = alpha * A @ B + beta * C``. NumPy always calls it with beta = 0, so
``Y += U @ B.T`` costs a temporary the size of Y and a second pass over Y to add it. LoRA's forward
does exactly that (the rank-r term ``s U B^T`` added to the base product ``X W0^T``), and so does
its backward (``dX = dY W0 + V A``). With beta = 1 the product lands in Y directly: for a
[512, 688] block of a LoRA layer, 0.10 ms instead of 0.25 ms.

    blas.gemm(U, B.T, out=Y, alpha=s, beta=1.0)     # Y = s U B^T + Y, no temporary

Without MKL the BLAS here is the OpenBLAS that NumPy's wheels ship (Linux, Windows), found in the process's
loaded libraries and called through ctypes; ctypes releases the GIL, so ``minilora.parallel``'s
threads run their products side by side. Where it is missing (macOS's Accelerate, CuPy arrays,
integer or mixed dtypes, strided views) ``gemm`` computes the same thing with NumPy/CuPy operators;
bfloat16 and float16 in float32, rounded once, as torch's CPU kernels.
``get_num_threads()`` / ``set_num_threads(n)`` are the other direct calls: minilora runs OpenBLAS on one
thread while it computes, and puts the caller's count back afterwards (``minilora.parallel`` says why).
MKL, as torch's: on its threads for a product minilora runs whole, on one inside minilora's split blocks.

Which BLAS: where Intel's ``mkl`` wheel is installed (``pip install minilora[mkl]``), its ``cblas_?gemm`` is
the one called -- MKL is what torch's CPU build multiplies with, so products come out with torch's bits, and on
the LoRA step's shapes it is 10-15% faster than NumPy's OpenBLAS on an Intel Xeon (numbers in ``library()``).
``MINILORA_BLAS=openblas`` (or ``select("openblas")``) keeps NumPy's own. ``matmul`` is ``np.matmul`` through
the chosen library: the products of ``minilora.ops`` call it, since NumPy's ``@`` always calls OpenBLAS.
"""
import ctypes
import functools
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import threading
import warnings

import numpy as np

from .dtypes import is_floating, upcast

__all__ = ["gemm", "gemm_batch", "matmul", "dot", "gemv", "addmm_", "has_direct_gemm", "gemm_address", "operand_form", "library", "select",
           "get_num_threads", "set_num_threads", "set_product_threads", "one_thread_each",
           "threads_products"]

_ROW_MAJOR, _COL_MAJOR, _NO_TRANS, _TRANS = 101, 102, 111, 112


def _openblas_libraries():
    """The OpenBLAS libraries this process has loaded (NumPy's wheels bundle one)."""
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


def _openblas_function(verb):
    """OpenBLAS's ``openblas_<verb>_num_threads`` under whichever name this build exports, or None."""
    for lib in _openblas_libraries():
        for name in (f"scipy_openblas_{verb}_num_threads64_", f"scipy_openblas_{verb}_num_threads",
                     f"openblas_{verb}_num_threads64_", f"openblas_{verb}_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_int if verb == "get" else None
                return fn
    return None


@functools.lru_cache(maxsize=None)
def _thread_setter():
    return _openblas_function("set")


@functools.lru_cache(maxsize=None)
def _thread_getter():
    return _openblas_function("get")


def get_num_threads():
    """OpenBLAS's own thread count (NumPy's BLAS on Linux and Windows), or None where there is none."""
    getter = _thread_getter()
    return None if getter is None else int(getter())


def set_num_threads(n):
    """Set OpenBLAS's own thread count (NumPy's BLAS on Linux and Windows); False where there is
    none (other BLAS libraries are left alone). While a thread flushes denormals (``hold_one_thread``)
    the count is kept for later and OpenBLAS stays on one thread."""
    global _count_after_hold
    setter = _thread_setter()
    if setter is None:
        return False
    with _hold_lock:
        if _holders:
            _count_after_hold = int(n)
        else:
            setter(int(n))
    return True


# OpenBLAS's own threads keep the MXCSR they started with: NumPy's wheels are built without OpenBLAS's
# CONSISTENT_FPCSR, which would hand them the caller's. So after set_flush_denormal(True), a product big enough
# for OpenBLAS to thread came out half flushed (the caller's rows flushed, the workers' not), where torch's is
# flushed throughout. While any thread has turned flushing on, OpenBLAS runs on the calling thread alone; the
# count set meanwhile (parallel.computing saves and restores it) takes effect when the last one turns it off.
# (A thread that ends while flushing keeps holding: only speed is lost.)
_hold_lock = threading.RLock()  # (reentrant: a signal handler may call set_flush_denormal inside it)
_holders = set()  # the threads (idents) that turned flushing on
_count_after_hold = None


def hold_one_thread(holder, hold):
    """``hold=True``: ``holder`` (a thread ident) needs OpenBLAS on one thread until it calls this with False."""
    global _count_after_hold
    setter = _thread_setter()
    if setter is None:
        return
    with _hold_lock:
        was_held = bool(_holders)
        if hold:
            _holders.add(holder)
        else:
            _holders.discard(holder)
        if _holders and not was_held:
            _count_after_hold = get_num_threads()
            setter(1)
        elif was_held and not _holders:
            setter(_count_after_hold)
            _count_after_hold = None


_MKL_SEQUENTIAL = 1  # MKL_THREADING_SEQUENTIAL: MKL computes on the calling thread alone


@functools.lru_cache(maxsize=None)
def _mkl_library():
    """Intel's MKL from the ``mkl`` wheel, or None where it is not installed.

    Threaded as torch's: torch 2.13's CPU build calls its MKL on MKL's GNU OpenMP layer with its thread count, and
    on 2 threads MKL splits the sum over K for products of few rows ([16, 784] x [784, 256], a tutorial's MNIST
    layer: 91% of the outputs an ulp off a one-thread product), long K ([512, 4096] x [4096, 700]) and weight
    gradients over many rows ([10, 1024] x [1024, 64]). So minilora links MKL's GNU layer against a copy of the GNU
    OpenMP (libgomp) torch ships -- else the system's -- and a product it runs whole gets MKL's threads, minilora's
    count and at most torch's (``set_product_threads``, ``_threads_for_product``): the same call as torch's, the same
    bits. Inside minilora's split blocks (``one_thread_each``) and in its C threads MKL runs on one thread, as
    torch's MKL does inside torch's own parallel loops. (Round 30: the Linear layers of tests/mkl_threads_sweep.py,
    forward and three gradients, float32/float64, on 2 threads: 52 of 328 tensors off torch's before, 0 after.)

    Loaded so that torch is left alone (``_mkl_linked``). Without a libgomp (or a compiler to link with): MKL's
    sequential layer; without a compiler, through ``libmkl_rt`` as before round 30 -- which opens its layers with
    RTLD_GLOBAL, so that torch imported after minilora's first product bound its own MKL functions to those and
    multiplied on one thread (measured: torch's 2-thread products then were its 1-thread ones): since round 31 only
    where torch cannot be imported later (``_runtime_leaves_torch_alone``), else None -- NumPy's OpenBLAS, with a
    warning. Where something else in the process loaded MKL's libraries already, those are shared."""
    global _mkl_layer
    try:
        files = importlib.metadata.distribution("mkl").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    located = {file.name: file.locate().resolve() for file in files}
    folder = located["libmkl_core.so.2"].parent if "libmkl_core.so.2" in located else None
    openmp = _gnu_openmp() if folder is not None and "libmkl_gnu_thread.so.2" in located else None
    for layer in ("gnu", "sequential") if openmp else ("sequential",):
        lib = None if folder is None else _mkl_linked(folder, openmp if layer == "gnu" else None)
        if lib is not None:
            if layer == "gnu":
                lib.MKL_Set_Num_Threads(ctypes.c_int(1))  # the default of every thread: C threads, split blocks
                lib.MKL_Set_Num_Threads_Local.argtypes = [ctypes.c_int]
            _mkl_layer = layer
            return lib
    if not _runtime_leaves_torch_alone():
        return None
    _mkl_layer = "sequential"
    return _mkl_runtime(located)


_mkl_layer = None  # "gnu" (threaded as torch's) or "sequential", once MKL is loaded
why_no_mkl = None  # why MKL is not minilora's library where the wheel is installed (a sentence), else None


def _torch_spec():
    """torch's module spec (installed: found without importing it), or None (not installed, or hidden)."""
    try:
        return importlib.util.find_spec("torch")
    except (ImportError, ValueError):  # (sys.modules["torch"] = None: torch hidden)
        return None


def _runtime_leaves_torch_alone():
    """Whether MKL's single library (``libmkl_rt``, the way without a compiler) may be loaded: it opens MKL's layers
    with RTLD_GLOBAL, and torch imported after that binds its own MKL functions to them and multiplies on their one
    thread (measured: torch's 2-thread products became its 1-thread ones; torch imported before is left alone, its
    own functions found first). So only where torch is imported already or not installed -- or MINILORA_BLAS=mkl asks
    for MKL whatever it costs torch. Else NumPy's OpenBLAS, with a warning that says why and how to keep MKL."""
    global why_no_mkl
    if sys.modules.get("torch") is not None or _torch_spec() is None:
        return True
    if os.environ.get("MINILORA_BLAS", "").lower() == "mkl":
        warnings.warn("minilora: MINILORA_BLAS=mkl without a C compiler loads MKL through libmkl_rt, whose functions "
                      "torch imported from now on will call: torch's products then run on one thread", RuntimeWarning,
                      stacklevel=4)
        return True
    why_no_mkl = ("no C compiler (or MINILORA_NATIVE=0) links MKL privately (native/mkl_link.c), and torch is "
                  "installed but not imported yet: "
                  "MKL's single library (libmkl_rt) would put its functions where torch imported later finds them, and "
                  "torch's products would run on one thread")
    warnings.warn(f"minilora: products run on NumPy's OpenBLAS, not MKL (not torch's bits): {why_no_mkl}. To keep "
                  "MKL, install a C compiler (or set CC), import torch before minilora's first product, or set "
                  "MINILORA_BLAS=mkl", RuntimeWarning, stacklevel=4)
    return False


def _gnu_openmp():
    """The path of the GNU OpenMP library torch multiplies with: the one loaded (torch imported), else torch's own
    (installed, not imported: looked up without importing it), else the system's; None where there is none."""
    loaded = _loaded_libgomp()
    if loaded:
        return loaded
    spec = _torch_spec()
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = os.path.join(folder, "lib", "libgomp.so.1")
        if os.path.isfile(candidate):
            return candidate
    try:
        ctypes.CDLL("libgomp.so.1")  # (the system's, by the loader's search)
    except OSError:
        return None
    return _loaded_libgomp()


def _loaded_libgomp():
    """The path of the libgomp.so.1 this process has loaded, or None (Linux's list of mapped files)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if os.path.basename(line.split()[-1]).startswith("libgomp.so")})
    except OSError:  # (not Linux)
        return None
    return paths[0] if paths else None


def _mkl_linked(folder, openmp):
    """MKL's layered libraries (GNU threads on a private copy of ``openmp``, else sequential) as the dependencies of a
    small library (``native/mkl_link.c``) loaded with RTLD_LOCAL: their symbols stay in its scope, so torch -- whose
    libtorch_cpu exports ~24000 functions of its own static MKL -- never binds to them, whichever is imported first
    (torch's products measured the same bits with and without it). None without a compiler."""
    from . import native
    layer = "libmkl_gnu_thread.so.2" if openmp else "libmkl_sequential.so.2"
    libraries = [os.path.join(folder, name) for name in ("libmkl_intel_lp64.so.2", layer, "libmkl_core.so.2")]
    if openmp:
        global _openmp
        openmp = _private_openmp(openmp, native)
        try:  # loaded first: the link names its soname, and a loaded soname is matched before any search
            with _short_spinning():
                _openmp = None if openmp is None else ctypes.CDLL(openmp)
        except OSError:
            _openmp = None
        if _openmp is None:
            return None
    # RTLD_DEEPBIND: MKL's GNU layer looks for GOMP_parallel & co. among its own links (the copy) before the global
    # scope, where torch's libgomp is once torch is imported (without it MKL's workers were torch's: spinning)
    return native.load(native.MKL_LINK, ["-Wl,--no-as-needed", *libraries, *([openmp] if openmp else []),
                                         f"-Wl,-rpath,{folder}"], mode=getattr(os, "RTLD_DEEPBIND", 0))


_GOMP_SONAME, _PRIVATE_SONAME = b"libgomp.so.1\0", b"libmlgomp.so\0"  # (the same length: a copy's bytes replaced)


def _private_openmp(source, native):
    """A copy of the libgomp at ``source`` under a soname of its own (in the cache folder), or None.

    Why a copy: GNU OpenMP's idle workers spin for a while before they sleep (torch's after every parallel region),
    and on a shared libgomp the workers of minilora's MKL products spun on while minilora's own threads ran the
    elementwise work between them: a full fine-tuning step of benchmarks/lora_step.py took 270-285 -> 425-485 ms of
    CPU time. The copy's workers spin only briefly before they sleep (``_short_spinning``), while torch's keep their
    policy; two OpenMP runtimes in one process, as scikit-learn's wheels ship their own."""
    try:
        data = open(source, "rb").read()
        if data.count(_GOMP_SONAME) != 1:  # (not the library this expects: no copy)
            return None
        target = native.cache_dir() / f"libgomp-{native.digest(data)}.so"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            native.write_atomically(target, data.replace(_GOMP_SONAME, _PRIVATE_SONAME))  # (processes start together)
        return str(target)
    except OSError:
        return None


# How long the private libgomp's idle workers spin (GOMP_SPINCOUNT: rounds of a `pause` loop) before they sleep.
# Round 28 let them sleep at once (OMP_WAIT_POLICY=PASSIVE): then every product woke a sleeping worker, and a LoRA
# step's ~220 products each waited for it (a futex wake-up, tens of microseconds on a KVM guest), where torch's
# spinning workers start at once. A short spin covers the gaps between one layer's back-to-back products and still
# sleeps through the elementwise work between layers. Measured (round 32, benchmarks/lora_step.py --repeats 5, 2
# vCPUs of an Intel Xeon, real-time priority so that the machine's other load stays out, two runs each, the median
# of the in-a-run ratios minilora LoRA / PEFT LoRA): passive 1.06, 1.11, 1.03, 1.04; 5000 1.04, 1.02, 1.01, 0.99;
# 10000 1.00, 1.01, 0.99, 0.99 (the LoRA step ~143 -> ~127 ms); 30000 1.05, 0.99, 1.00, 0.97. CPU time: the same
# within its noise at real-time priority; at normal priority under a load average of ~9 (other processes
# wanting the cores the workers spin on) 271 / 287 -> 313 / 298 ms; 100000 there: 264 / 291 -> 578 / 767 ms.
SPINS_BEFORE_SLEEP = 10000


class _short_spinning:
    """While the private libgomp loads (it reads its settings then): its idle workers spin ``SPINS_BEFORE_SLEEP``
    rounds, then sleep, unless the process's environment chose a policy (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``)."""

    def __enter__(self):
        self.set = not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ)
        if self.set:
            os.environ["GOMP_SPINCOUNT"] = str(SPINS_BEFORE_SLEEP)

    def __exit__(self, *exc_info):
        if self.set:
            os.environ.pop("GOMP_SPINCOUNT", None)
        return False


def _mkl_runtime(located):
    """MKL through its single dynamic library (``libmkl_rt``, ``mkl_rt.*.dll``) on the sequential layer, or None."""
    for name, path in located.items():
        if name.startswith("libmkl_rt.so") or name.startswith("mkl_rt.") and name.endswith(".dll"):
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                return None
            return lib if lib.MKL_Set_Threading_Layer(ctypes.c_int(_MKL_SEQUENTIAL)) == _MKL_SEQUENTIAL else None
    return None


# ---- MKL's thread count ------------------------------------------------------------------------------------------
_product_threads = 1  # MKL's threads for a product run whole (minilora.parallel's count: set_product_threads)
_openmp = None  # minilora's copy of GNU OpenMP, that MKL's GNU layer runs on (_private_openmp)
_after_fork = False  # in a forked child: one thread (GNU OpenMP's threads do not survive fork)
_here = threading.local()  # .blocks: how deep this thread is in one_thread_each


def set_product_threads(n):
    """MKL's threads for each product minilora runs whole (``minilora.parallel.set_num_threads`` passes its count,
    as ``torch.set_num_threads`` sets torch's MKL's). Only a number: nothing is loaded."""
    global _product_threads
    _product_threads = int(n)


class one_thread_each:
    """``with one_thread_each():`` -- this thread's products run on one MKL thread: a block of a split region, where
    minilora's threads already use every core (nested threads would oversubscribe them)."""

    __slots__ = ()

    def __enter__(self):
        _here.blocks = getattr(_here, "blocks", 0) + 1
        return self

    def __exit__(self, *exc_info):
        _here.blocks -= 1
        return False


# Which products MKL's threads give other bits than one thread's has no simple rule (measured, 2 threads against 1,
# M 2-2048, N 8-4096, K 16-4096, A and B as is or transposed, beta 0 and 1: K > 512 split in ~70% of the shapes, and
# below it some too -- float64 [16, 256] x [256, 64]^T, float32 [8, 384] x [384, 128]^T, a 2-row float64 product with
# beta 1 from K = 64), so every product minilora runs whole gets MKL's threads: torch's call, torch's bits.
def _threads_for_product():
    """How many MKL threads a product called now gets (1: MKL's default here, nothing to set): minilora's count, and
    no more than torch's where torch is imported (``torch.set_num_threads``), else than OpenMP's (``OMP_NUM_THREADS``,
    which torch's count starts from) -- so a count set for torch steers minilora's products alike."""
    if _product_threads == 1 or _after_fork or _mkl_layer != "gnu" or getattr(_here, "blocks", 0):
        return 1
    torch_threads = getattr(sys.modules.get("torch"), "get_num_threads", None)  # (None: not imported, or importing)
    return min(_product_threads, torch_threads() if torch_threads is not None else _openmp.omp_get_max_threads())


def threads_products():
    """Whether MKL threads the products minilora runs whole here (its GNU layer, more than one thread for this
    thread): then a product minilora would split by rows runs whole instead, split as torch's is -- MKL may split the
    sum over K, and no split of minilora's gives those bits."""
    return library() == "mkl" and _threads_for_product() > 1


def _with_mkl_threads(call, *args):
    """``call(*args)`` (an MKL routine) on ``_threads_for_product()`` threads: MKL's count for this thread is set for
    the call and put back (to every thread's default, one) after it, so that C code calling MKL's ?gemm in this
    thread later (gemm_pool's blocks, the flash kernels) runs on one thread, as torch's inside its parallel loops."""
    threads = _threads_for_product()
    if threads == 1:
        return call(*args)
    lib = _mkl_library()
    lib.MKL_Set_Num_Threads_Local(threads)
    try:
        return call(*args)
    finally:
        lib.MKL_Set_Num_Threads_Local(0)  # (0: this thread follows the global count again)


def _forked():
    global _after_fork
    _after_fork = True


if hasattr(os, "register_at_fork"):
    # GNU OpenMP keeps its worker threads in a pool that a forked child lacks: the child's next parallel region waits
    # for them forever (torch's own 2-thread product hangs there, measured). One thread never uses the pool.
    os.register_at_fork(after_in_child=_forked)


_choice = None  # "mkl" or "openblas" once chosen (select() or MINILORA_BLAS)


def library():
    """The BLAS that ``gemm``/``matmul`` call: "mkl" (the ``mkl`` wheel is installed, MINILORA_BLAS is not
    "openblas", and ``_mkl_library`` may load it: without a compiler only where torch is imported already or not
    installed, ``why_no_mkl`` says why not) or "openblas" (NumPy's own; also the name where there is none, and
    products fall back to NumPy).

    Measured (2 vCPUs of an Intel Xeon with AVX-512, real-time priority, one thread each): [512, 256] x [256, 688]
    1121 -> 981 us a call (MKL 2024.2; 2026.2 961); ``benchmarks/lora_step.py`` LoRA / PEFT in a run 0.93-0.94 ->
    0.89-0.90, ``train_step.py`` full fine-tuning / transformers 1.03-1.07 -> 0.93-0.97 (round 28's start vs its end)."""
    global _choice
    if _choice is None:
        wanted = os.environ.get("MINILORA_BLAS", "auto").lower()
        if wanted not in ("auto", "mkl", "openblas"):
            raise ValueError(f"MINILORA_BLAS={wanted!r}: expected 'auto', 'mkl' or 'openblas'")
        select("openblas" if wanted == "openblas" or (wanted == "auto" and _mkl_library() is None) else "mkl")
    return _choice


def select(name):
    """Use ``name`` ("mkl" or "openblas") for every product from now on; returns the name used before."""
    global _choice
    if name not in ("mkl", "openblas"):
        raise ValueError(f"select({name!r}): expected 'mkl' or 'openblas'")
    if name == "mkl" and _mkl_library() is None:
        raise RuntimeError(f"MKL is not available: {why_no_mkl}" if why_no_mkl else
                           "MKL is not available: install it with `pip install minilora[mkl]` (Intel's `mkl` wheel); "
                           "or another library in this process called MKL first on a threaded layer")
    before, _choice = _choice, name
    _cblas_gemm.cache_clear()
    _cblas_gemm_batch.cache_clear()
    return before


def _gemm_libraries():
    """The libraries to look for ``cblas_?gemm`` in, with the names each spells it: the chosen one first."""
    if library() == "mkl":
        return [(_mkl_library(), ("cblas_{}gemm_64",))]
    return [(lib, ("scipy_cblas_{}gemm64_", "cblas_{}gemm64_")) for lib in _openblas_libraries()]


@functools.lru_cache(maxsize=None)
def _cblas_gemm(dtype):
    """The CBLAS ``?gemm`` for float32 ('s') or float64 ('d') with its argument types, or None.

    Only the ILP64 names (64-bit integer arguments: suffix ``64_`` in NumPy's OpenBLAS, ``_64`` in MKL) are
    used: an unsuffixed name does not say how wide its integers are -- guessing wrong would corrupt memory,
    so there the NumPy fallback runs instead."""
    letter = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}.get(np.dtype(dtype))
    if letter is None:
        return None
    scalar = ctypes.c_float if letter == "s" else ctypes.c_double
    for lib, spellings in _gemm_libraries():
        for name in spellings:
            fn = getattr(lib, name.format(letter), None)
            if fn is not None:
                i64, ptr = ctypes.c_int64, ctypes.c_void_p
                fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, scalar, ptr, i64,
                               ptr, i64, scalar, ptr, i64]
                fn.restype = None
                return fn
    return None


@functools.lru_cache(maxsize=None)
def _cblas_gemm_batch(dtype):
    """MKL's ``cblas_?gemm_batch_strided`` (one call for a stack of equally spaced products, as torch's bmm
    makes it), or None (OpenBLAS, or not float32/float64)."""
    letter = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}.get(np.dtype(dtype))
    if letter is None or library() != "mkl":
        return None
    fn = getattr(_mkl_library(), f"cblas_{letter}gemm_batch_strided_64", None)
    if fn is not None:
        scalar = ctypes.c_float if letter == "s" else ctypes.c_double
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, scalar, ptr, i64, i64,
                       ptr, i64, i64, scalar, ptr, i64, i64, i64]
        fn.restype = None
    return fn


# ---- BLAS level 1 and 2: torch's dot and gemv, called as ATen calls them -----------------------------------------
@functools.lru_cache(maxsize=None)
def _mkl_vector_routine(name, dtype):
    """MKL's ILP64 ``cblas_?dot``/``cblas_?gemv`` for float32 ('s') or float64 ('d'), with its argument types."""
    letter = "s" if dtype == np.float32 else "d"
    scalar, i64, ptr = (ctypes.c_float if letter == "s" else ctypes.c_double), ctypes.c_int64, ctypes.c_void_p
    fn = getattr(_mkl_library(), f"cblas_{letter}{name}_64")
    if name == "dot":
        fn.argtypes, fn.restype = [i64, ptr, i64, ptr, i64], scalar
    else:  # gemv: layout, trans, m, n, alpha, a, lda, x, incx, beta, y, incy
        fn.argtypes = [ctypes.c_int, ctypes.c_int, i64, i64, scalar, ptr, i64, ptr, i64, scalar, ptr, i64]
        fn.restype = None
    return fn


def dot(x, y):
    """MKL's ``?dot`` of two C-contiguous float32/float64 vectors of one dtype (a NumPy scalar), on torch's threads:
    torch's ``dot``. Only where MKL is the library."""
    fn = _mkl_vector_routine("dot", x.dtype.type)
    return x.dtype.type(_with_mkl_threads(fn, x.size, x.ctypes.data, 1, y.ctypes.data, 1))


def gemv(trans, m, n, alpha, a, lda, x, incx, beta, y):
    """MKL's column-major ``?gemv`` into ``y`` (C-contiguous; read where ``beta != 0``), with the arguments ATen's
    ``gemv`` passes (``trans`` "n" or "t"; ``a``, ``x``: arrays whose first element is where the data starts, ``lda`` and
    ``incx`` in elements), on torch's threads: torch's ``mv``/``addmv``. Only where MKL is the library."""
    fn = _mkl_vector_routine("gemv", a.dtype.type)
    _with_mkl_threads(fn, _COL_MAJOR, _NO_TRANS if trans == "n" else _TRANS, m, n, alpha, a.ctypes.data, lda,
                      x.ctypes.data, incx, beta, y.ctypes.data, 1)
    return y


def gemm_address(dtype):
    """The address of the CBLAS ``?gemm`` for float32/float64 (for C code that calls it: native/gemm_pool.c),
    or None."""
    fn = _cblas_gemm(dtype)
    return None if fn is None else ctypes.cast(fn, ctypes.c_void_p).value


def has_direct_gemm(dtype=np.float32):
    """Whether ``gemm`` calls BLAS directly for this dtype (else it falls back to NumPy)."""
    return _cblas_gemm(dtype) is not None


def operand_form(a):
    """``(transpose flag, leading dimension)`` of a 2-D operand as CBLAS row-major sees it, or None
    when its memory is neither rows nor columns of a dense matrix (a strided view)."""
    rows_stride, cols_stride = _torch_strides(a)
    if cols_stride == 1 and rows_stride >= max(1, a.shape[1]):
        return _NO_TRANS, rows_stride
    if rows_stride == 1 and cols_stride >= max(1, a.shape[0]):  # a transposed view, e.g. W.T
        return _TRANS, cols_stride
    return None


def _torch_strides(a):
    """A 2-D array's strides in elements, as torch's tensor of that memory has them: NumPy's ``v[None]`` steps 0
    along its new dimension of size 1, torch's ``unsqueeze`` as if contiguous there (the next dimension's extent, or
    1 for the last) -- and ATen picks the BLAS call's form from them."""
    rows_stride, cols_stride = (s // a.itemsize for s in a.strides)
    if a.shape[1] == 1 and cols_stride == 0:
        cols_stride = 1
    if a.shape[0] == 1 and rows_stride == 0:
        rows_stride = a.shape[1] * cols_stride
    return rows_stride, cols_stride


def _one_column_call(a, b, M, K):
    """ATen's column-major ``gemm`` arguments for a product of one output column (``out`` [M, 1], which ATen takes
    as a column-major matrix: no operand swap, unlike every wider product, which CBLAS's row-major form is): each
    operand as it lies where it can (else a C-contiguous copy, transposed), then CPUBlas's ``normalize_last_dims``.
    Returns ``(trans_a, a, lda, trans_b, b, ldb)``."""
    (a_rows, a_cols), (b_rows, b_cols) = _torch_strides(a), _torch_strides(b)
    if a_rows == 1 and a_cols >= max(1, M):
        trans_a, lda = _NO_TRANS, a_cols
    elif a_cols == 1 and a_rows >= max(1, K):
        trans_a, lda = _TRANS, a_rows
    else:
        a, trans_a, lda = np.ascontiguousarray(a), _TRANS, K
    if b_rows == 1 and b_cols >= max(1, K):
        trans_b, ldb = _NO_TRANS, b_cols
    elif b_cols == 1 and b_rows >= 1:
        trans_b, ldb = _TRANS, b_rows
    else:
        b, trans_b, ldb = np.ascontiguousarray(b), _TRANS, 1
    if trans_a == _TRANS and M == 1:
        lda = K
    elif trans_a == _NO_TRANS and K == 1:
        lda = M
    ldb = 1 if trans_b == _TRANS and K == 1 else K if trans_b == _NO_TRANS else ldb
    return trans_a, a, lda, trans_b, b, ldb


def gemm(a, b, out, alpha=1.0, beta=0.0):
    """``out[...] = alpha * (a @ b) + beta * out``, in place; returns ``out``.

    ``a`` [M, K], ``b`` [K, N], ``out`` [M, N]: 2-D arrays of one dtype. With beta = 0, ``out``'s old
    values are ignored (even NaN), as in BLAS."""
    M, K = a.shape
    N = b.shape[1]
    if b.shape[0] != K or out.shape != (M, N):
        raise ValueError(f"gemm: shapes {a.shape} @ {b.shape} -> {out.shape} do not match")
    if not _direct_gemm_applies(a, b, out):
        return _gemm_with_operators(a, b, out, alpha, beta)
    ops = operand_form(a), operand_form(b)
    if None in ops:
        return _gemm_with_operators(a, b, out, alpha, beta)
    if M == 1 and out.ctypes.data % _TORCH_ALIGNMENT and _threads_for_product() > 1:
        return _one_row_aligned(a, b, out, alpha, beta)
    fn = _cblas_gemm(out.dtype)
    if N == 1 and library() == "mkl":  # (torch's call: MKL picks its kernel by the form, and the bits with it)
        trans_a, a, lda, trans_b, b, ldb = _one_column_call(a, b, M, K)
        _with_mkl_threads(fn, _COL_MAJOR, trans_a, trans_b, M, 1, K, alpha, a.ctypes.data, lda, b.ctypes.data, ldb,
                          beta, out.ctypes.data, M)
        return out
    (trans_a, lda), (trans_b, ldb) = ops
    _with_mkl_threads(fn, _ROW_MAJOR, trans_a, trans_b, M, N, K, alpha, a.ctypes.data, lda, b.ctypes.data, ldb, beta,
                      out.ctypes.data, N)
    return out


# torch's CPU allocator aligns every tensor to 64 bytes; NumPy's arrays to 16. MKL's threaded product of one row
# splits the row's columns between its threads by where the output lies: measured (round 31, 2 threads, M 1-256,
# K 64-4096, N 1-4096, each operand 16/32 bytes off 64, float32/float64), a float32 row times an untransposed
# [K, 4096] came out other than torch's when the output was not 64-byte aligned (12 of 432 cases; every other
# misalignment, and every product on one thread, gave the same bits). Such a row is computed where torch's would lie.
_TORCH_ALIGNMENT = 64


def _aligned_empty(shape, dtype):
    """``np.empty(shape, dtype)`` starting at a multiple of 64 bytes, as torch's CPU tensors."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    buffer = np.empty(count * dtype.itemsize + _TORCH_ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % _TORCH_ALIGNMENT
    return buffer[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


def torch_aligned(a):
    """``a`` C-contiguous from a multiple of 64 bytes, as torch's allocator places a tensor (``a`` itself where it is
    already so, else a copy): for MKL calls whose kernels read an operand by where it lies."""
    if a.flags.c_contiguous and a.ctypes.data % _TORCH_ALIGNMENT == 0:
        return a
    aligned = _aligned_empty(a.shape, a.dtype)
    aligned[...] = a
    return aligned


def _one_row_aligned(a, b, out, alpha, beta):
    """``gemm`` of one row into a 64-byte aligned row (see _TORCH_ALIGNMENT), copied into ``out``."""
    row = _aligned_empty(out.shape, out.dtype)
    if beta != 0.0:
        row[...] = out
    gemm(a, b, row, alpha=alpha, beta=beta)
    out[...] = row
    return out


def gemm_batch(a, b, out, beta=0.0, alpha=1.0):
    """``out[i] = alpha * (a[i] @ b[i]) + beta * out[i]`` for each index ``i`` of stacks ``a`` [..., M, K],
    ``b`` [..., K, N], ``out`` [..., M, N] (one leading shape; an operand may repeat one matrix, a broadcast view; each
    matrix of ``out`` C-contiguous, the stack not necessarily: the rows of a block of queries); returns ``out``.

    With MKL, one ``gemm_batch_strided`` call per index of all but the last leading axis: each product's bits are
    those of a ``gemm`` of its own (measured on float32/float64 stacks, beta 0 and 1, any alpha, all four transposes),
    without Python's cost per product -- except where M, N or K is 1: there a ``gemm`` of its own takes other paths
    (a matrix-vector product's, by the bits: ~1500 of 5760 such shapes and options differed), so each matrix goes
    through ``gemm``, as torch's flash-attention kernel calls it (a block of one query row). Elsewhere (OpenBLAS,
    operands BLAS cannot read as they are) ``gemm`` on each matrix too."""
    batched = _cblas_gemm_batch(out.dtype)
    first = (0,) * (out.ndim - 2)
    forms = None if out.ndim < 3 or out.size == 0 else (operand_form(a[first]), operand_form(b[first]))
    if (batched is None or forms is None or None in forms or 1 in (*out.shape[-2:], a.shape[-1])
            or not _direct_gemm_applies(a[first], b[first], out[first])
            or any(x.strides[-3] % x.itemsize for x in (a, b, out)) or np.may_share_memory(out, a)
            or np.may_share_memory(out, b)):
        for i in np.ndindex(out.shape[:-2]):
            gemm(a[i], b[i], out[i], alpha=alpha, beta=beta)
        return out
    (trans_a, lda), (trans_b, ldb) = forms
    (M, K), N, count, step = a.shape[-2:], b.shape[-1], out.shape[-3], out.itemsize
    a_step, b_step, out_step = (x.strides[-3] // step for x in (a, b, out))
    for a_at, b_at, out_at in zip(*(_stack_addresses(x, out.shape[:-3]) for x in (a, b, out))):
        _with_mkl_threads(batched, _ROW_MAJOR, trans_a, trans_b, M, N, K, alpha, a_at, lda, a_step, b_at, ldb, b_step,
                          beta, out_at, N, out_step, count)
    return out


def _stack_addresses(x, leading):
    """The address of each stack ``x[i]`` (``i`` over the ``leading`` axes, C order), as Python ints: by the
    strides, without a view per stack (Python's cost per call counts: a block of queries is a few products)."""
    addresses = [x.ctypes.data]
    for n, stride in zip(leading, x.strides):
        addresses = [at + i * stride for at in addresses for i in range(n)]
    return addresses


def addmm_(out, a, b, *, beta=1.0, alpha=1.0):
    """PyTorch's ``out.addmm_(a, b, beta=beta, alpha=alpha)`` on arrays: ``out = beta * out + alpha * (a @ b)``,
    in place and, where BLAS is at hand, without a temporary for the product. This is the name the
    teaching code uses (``addmm_(Y, U, B.T, alpha=s)`` reads ``Y += s U B^T``); ``gemm`` is the call."""
    return gemm(a, b, out, alpha=alpha, beta=beta)


def matmul(a, b, out=None):
    """``np.matmul(a, b, out=out)`` (batches broadcast) with each product a ``gemm`` of the chosen library.

    NumPy's ``@`` always calls NumPy's own OpenBLAS; with MKL chosen, float32/float64 products of matrices
    (2-D and up) are MKL's here -- one ``gemm``, or one ``gemm_batch_strided`` for a stack, as torch's mm and
    bmm call them. Everything else (OpenBLAS chosen, vectors, other dtypes, CuPy arrays) is ``matmul`` itself."""
    if not (library() == "mkl" and _mkl_takes(a, b)):
        matmul_of = np.matmul if isinstance(a, np.ndarray) else importlib.import_module(type(a).__module__.split(".")[0]).matmul
        return matmul_of(a, b) if out is None else matmul_of(a, b, out=out)
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    if out is not None and (out.shape != shape or out.dtype != a.dtype):
        return np.matmul(a, b, out=out)  # (NumPy's words for a wrong ``out``, or its casting)
    target = out if _writable_target(out, a, b) else np.empty(shape, a.dtype)
    if len(shape) == 2:
        gemm(_blas_operand(a), _blas_operand(b), target)
    else:
        _stack_of_products(a, b, target)
    if out is not None and target is not out:
        out[...] = target
    return target if out is None else out


def _mkl_takes(a, b):
    """Matrices (2-D and up, not empty) of float32 or float64 alike, in NumPy arrays: what ``matmul`` hands to MKL."""
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.ndim >= 2 and b.ndim >= 2
            and a.dtype == b.dtype and a.dtype in (np.float32, np.float64) and a.shape[-1] == b.shape[-2]
            and a.size > 0 and b.size > 0)  # (empty: nothing to multiply, NumPy's zeros)


def _writable_target(out, a, b):
    """Whether the products can be written straight into ``out``: C-contiguous, aligned, not an input's memory."""
    return (out is not None and out.flags.c_contiguous and out.flags.aligned
            and not np.may_share_memory(out, a) and not np.may_share_memory(out, b))


def _blas_operand(a):
    """``a`` itself where BLAS reads it as it is (rows or columns of a dense matrix, aligned), else a dense copy
    (NumPy's matmul copies such an operand too)."""
    return a if a.flags.aligned and operand_form(a) is not None else np.ascontiguousarray(a)


def _stack_of_products(a, b, out):
    """``out[i] = a[i] @ b[i]`` over the broadcast batch axes: one ``gemm_batch_strided`` call where each stack
    is equally spaced in memory, else one ``gemm`` per product."""
    batch = out.shape[:-2]
    a3 = np.broadcast_to(a, batch + a.shape[-2:]).reshape((-1,) + a.shape[-2:])
    b3 = np.broadcast_to(b, batch + b.shape[-2:]).reshape((-1,) + b.shape[-2:])
    out3 = out.reshape((-1,) + out.shape[-2:])  # (a view: ``out`` is C-contiguous)
    batched = _cblas_gemm_batch(out.dtype)
    a3, b3 = (x if x.flags.aligned and operand_form(x[0]) is not None else np.ascontiguousarray(x) for x in (a3, b3))
    M, K = a3.shape[1:]
    N = b3.shape[2]
    if batched is None:
        for i in range(len(out3)):
            gemm(a3[i], b3[i], out3[i])
        return
    (trans_a, lda), (trans_b, ldb) = operand_form(a3[0]), operand_form(b3[0])
    step = out.itemsize
    _with_mkl_threads(batched, _ROW_MAJOR, trans_a, trans_b, M, N, K, 1.0, a3.ctypes.data, lda, a3.strides[0] // step,
                      b3.ctypes.data, ldb, b3.strides[0] // step, 0.0, out3.ctypes.data, N, M * N, len(out3))


def _direct_gemm_applies(a, b, out):
    """NumPy arrays of one float dtype that BLAS has, aligned, ``out`` C-contiguous and not
    overlapping an input (BLAS would read values it has already overwritten), nothing empty."""
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and isinstance(out, np.ndarray)
            and a.dtype == b.dtype == out.dtype and _cblas_gemm(out.dtype) is not None
            and out.flags.c_contiguous and a.flags.aligned and b.flags.aligned and out.flags.aligned
            and min(a.size, b.size, out.size) > 0
            and not np.may_share_memory(out, a) and not np.may_share_memory(out, b))


def _gemm_with_operators(a, b, out, alpha, beta):
    """The same as ``gemm`` with array operators (a temporary for the product)."""
    if out.dtype.itemsize == 2 and is_floating(out.dtype):
        return _gemm_16bit(a, b, out, alpha, beta)
    product = a @ b
    if alpha != 1.0:
        product *= alpha
    if beta == 0.0:
        out[...] = product
    else:
        if beta != 1.0:
            out *= beta
        out += product
    return out


def _gemm_16bit(a, b, out, alpha, beta):
    """``gemm`` for bfloat16/float16 ``out``, as torch's CPU ``addmm_``: ``alpha * a @ b + beta * out``
    all in float32 and rounded once. (NumPy's ``a @ b`` of two bfloat16 arrays is float32 with the
    products summed in bfloat16, and the usual ``out += product`` would round twice.)"""
    result = upcast(a) @ upcast(b)
    if alpha != 1.0:
        result *= alpha
    if beta != 0.0:
        result += upcast(out) if beta == 1.0 else beta * upcast(out)
    out[...] = result.astype(out.dtype)
    return out


# ---- LAPACK's SVD -------------------------------------------------------------------------------
_LAPACK_COL_MAJOR = 102


_I32, _PTR = ctypes.c_int, ctypes.c_void_p
_LAPACKE_ARGUMENTS = {  # (after the layout) the argument types of the LAPACKE routines minilora calls
    "gesdd": [ctypes.c_char, _I32, _I32, _PTR, _I32, _PTR, _PTR, _I32, _PTR, _I32],
    "geqrf": [_I32, _I32, _PTR, _I32, _PTR],
    "orgqr": [_I32, _I32, _I32, _PTR, _I32, _PTR],
    "getrf_work": [_I32, _I32, _PTR, _I32, _PTR],  # (the _work form: no NaN check first -- torch calls getrf on NaN)
}


@functools.lru_cache(maxsize=None)
def _lapacke(routine, dtype):
    """MKL's ``LAPACKE_?<routine>`` for float32 ('s') or float64 ('d'), LP64 integers, with its argument types."""
    fn = getattr(_mkl_library(), f"LAPACKE_{'s' if dtype == np.float32 else 'd'}{routine}")
    fn.argtypes = [_I32] + _LAPACKE_ARGUMENTS[routine]
    fn.restype = _I32
    return fn


def _aligned_columns(a):
    """A column-major copy of the matrix ``a`` from a multiple of 64 bytes, as torch's LAPACK calls get theirs (a
    tensor's storage is 64-byte aligned; MKL's blocked kernels on an AMD Zen 4 read a matrix by where it lies)."""
    copy = _aligned_empty(a.shape[::-1], a.dtype).T
    copy[...] = a
    return copy


def _lapack_takes(a):
    """Whether MKL's LAPACK computes this factorisation: MKL is the library, and ``a`` a float32/float64 matrix."""
    return library() == "mkl" and a.dtype in (np.float32, np.float64) and a.ndim == 2


# Measured against torch 2.13: on MKL's sequential layer (before round 30) every bit for m <= n, and for m > n the same
# signs, a few ulps apart (it factors tall panels another way); on the GNU layer, with MKL's threads as torch's
# (``_with_mkl_threads``), every bit on 1 and 2 threads, tall matrices too (float32/float64, 300x40 to 2000x256).
def gesdd(a, full_matrices):
    """``(U, S, Vh)`` of a finite float32/float64 matrix [m, n] from MKL's divide-and-conquer SVD, as torch's CPU
    ``linalg.svd`` computes it (a column-major copy to ``?gesdd``); None where MKL is not the library.

    Why: the singular vectors' signs are the LAPACK's choice, and NumPy's (OpenBLAS's) flips some of torch's, so a
    factorisation built on them (PEFT's PiSSA init, add_weighted_adapter's "svd") held other numbers."""
    if not _lapack_takes(a):
        return None
    m, n = a.shape
    k = min(m, n)
    work = _aligned_columns(a)  # (gesdd overwrites its input)
    U = _aligned_columns(np.empty((m, m if full_matrices else k), a.dtype))
    Vh = _aligned_columns(np.empty((n if full_matrices else k, n), a.dtype))
    S = np.empty(k, a.dtype)
    info = _with_mkl_threads(_lapacke("gesdd", a.dtype.type), _LAPACK_COL_MAJOR, b"A" if full_matrices else b"S",
                             m, n, work.ctypes.data, m, S.ctypes.data, U.ctypes.data, m, Vh.ctypes.data, Vh.shape[0])
    return None if info != 0 else (U, S, Vh)


def getrf(a):
    """``(LU, pivots, info)`` of a float32/float64 matrix [m, n] from MKL's LU with partial pivoting, as torch's CPU
    ``linalg.lu_factor`` computes it (``?getrf`` on a column-major copy): LU as a NumPy matrix, pivots 1-based int32,
    info the first zero pivot's 1-based index (0: none). Only where MKL is the library."""
    m, n = a.shape
    work, pivots = _aligned_columns(a), np.zeros(min(m, n), np.int32)
    info = _with_mkl_threads(_lapacke("getrf_work", a.dtype.type), _LAPACK_COL_MAJOR, m, n, work.ctypes.data, max(1, m),
                             pivots.ctypes.data)
    return work, pivots, max(info, 0)


def geqrf_orgqr(a, complete):
    """``(Q, R)`` of a finite float32/float64 matrix [m, n] from MKL's Householder QR, as torch's CPU ``linalg.qr``
    computes it (``?geqrf``, then ``?orgqr`` forms Q); None where MKL is not the library. ``complete``: Q [m, m]
    and R [m, n]; else Q [m, k], R [k, n], k = min(m, n). (NumPy's LAPACK: other bits; OLoRA factors a weight so.)"""
    if not _lapack_takes(a):
        return None
    m, n = a.shape
    k = min(m, n)
    reflectors, tau = _aligned_columns(a), np.empty(k, a.dtype)
    if _with_mkl_threads(_lapacke("geqrf", a.dtype.type), _LAPACK_COL_MAJOR, m, n, reflectors.ctypes.data, m,
                         tau.ctypes.data) != 0:
        return None
    columns = m if complete else k
    Q = np.zeros((m, columns), a.dtype, order="F")
    Q[:, :min(columns, n)] = reflectors[:, :min(columns, n)]
    if _with_mkl_threads(_lapacke("orgqr", a.dtype.type), _LAPACK_COL_MAJOR, m, columns, k, Q.ctypes.data, m,
                         tau.ctypes.data) != 0:
        return None
    return Q, np.triu(reflectors[:columns])
