"""Compile a C (or C++) file with the system compiler on first use, cache the shared library, load it with ctypes.

One place for it: ``float32_math``'s kernels (``float32_kernels.c``, below) and the CUDA emulator's builds
(``emulator.py``: its ``digest`` and ``compile_atomically``) go through here. A library lives in the cache
under a name keyed by the source's hash, the compiler (its path, size and date) and the flags, so each
source compiles once per machine and cache (CI points ``MINILORA_CACHE_DIR`` at one folder a run: one
compile a run), written under a temporary name and renamed, with a lock file around the compile so that
processes starting together (pytest's workers) compile it once and the others wait and load it.

Nothing here is needed: no compiler, a compiler that fails, a library that does not load, or
``MINILORA_NATIVE=0``, and ``load`` returns None with the reason in ``why_unavailable`` -- the caller
runs its NumPy code, which gives the same numbers. Compiler: ``$CC``, else ``cc``.
"""
import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path

__all__ = ["cache_dir", "digest", "compile_atomically", "write_atomically", "remove_leftovers", "pid_alive",
           "CompileFailed", "load", "why_unavailable", "FLOAT32_KERNELS", "GEMM_POOL", "MKL_LINK", "address"]

FLOAT32_KERNELS = Path(__file__).with_name("float32_kernels.c")
MKL_LINK = Path(__file__).with_name("mkl_link.c")  # blas' MKL: its libraries in this library's scope alone
GEMM_POOL = Path(__file__).with_name("gemm_pool.c")  # minilora.gemm_pool's threads
# IEEE arithmetic as written: no contraction of a * b + c into an FMA (the source calls fmaf() where
# SLEEF fuses), no -ffast-math reassociation or dropped signed zeros and NaNs. -fno-trapping-math (no FP
# exception is ever unmasked here) only lets GCC turn the ternaries into vector selects; -O3 vectorizes.
_FLAGS = ["-std=c99", "-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared"]
# C++ sources call the standard library's algorithms as torch's kernels do; nothing floating-point is computed.
_CXX_FLAGS = ["-std=c++17", "-O2", "-fPIC", "-shared"]
_VERSION = "1"  # bump to rebuild every cached library
_LOCK = threading.Lock()
why_unavailable = {}  # source name -> why load() returned None


class CompileFailed(RuntimeError):
    """The compiler could not be run or rejected the source (the message holds its output)."""


def cache_dir():
    """Where compiled libraries live: ``$MINILORA_CACHE_DIR``, else ``$XDG_CACHE_HOME/minilora/native``
    (``~/.cache`` without it)."""
    if os.environ.get("MINILORA_CACHE_DIR"):
        return Path(os.environ["MINILORA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "minilora" / "native"


def digest(*parts):
    """A short hash of ``parts`` (bytes, or anything ``str()`` spells), for a cache key."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def compile_atomically(cmd, output, before_rename=None):
    """Run the compiler command ``cmd`` writing to a temporary name beside ``output``, then rename it
    there: a concurrent build or load never sees half a file. ``before_rename(tmp)`` runs first.
    Returns what the compiler printed (its warnings); raises ``CompileFailed`` with the compiler's output."""
    output = Path(output)
    remove_leftovers(output)
    tmp = output.with_name(f"{output.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        try:
            res = subprocess.run([*cmd, "-o", str(tmp)], capture_output=True, text=True)
        except OSError as exc:  # (no such compiler)
            raise CompileFailed(f"cannot run {cmd[0]}: {exc.strerror}") from None
        if res.returncode != 0:
            raise CompileFailed(res.stderr.strip())
        if before_rename is not None:
            before_rename(tmp)
        _synced(tmp)
        os.replace(tmp, output)
        return res.stderr
    finally:  # (a failed compile, a before_rename that raised, Ctrl-C: subprocess.run killed the compiler)
        tmp.unlink(missing_ok=True)


def write_atomically(path, data):
    """A cache file whose text or bytes are ``data``, whole or not there: written under a temporary name beside it
    (this process's and thread's: processes starting together write it at once), then renamed. A write that fails
    (a full disk, a Ctrl-C) removes its temporary file: before, one left it in the cache for good (a library's
    copy, a megabyte, at each start on a full disk), as ``remove_leftovers`` spares a live process's files."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data)
        _synced(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _synced(path):
    """Flush the file at ``path`` to the disk before it is renamed into place: after a power loss a file renamed
    first could be there under its final name, empty or cut short (the rename reached the disk, its bytes not), and
    a cache file that is there is used as it is."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_leftovers(output):
    """Delete what a build of ``output`` killed mid-way left beside it: its temporary files
    (``<name>.<pid>.<...>.tmp``) and g++'s ``-fstack-usage`` reports of them (``.su``), unless the process
    that wrote them still runs. Without this a cache folder collects them forever."""
    prefix = f"{output.name}."
    try:
        entries = os.listdir(output.parent)
    except OSError:  # (no cache folder yet)
        return
    for entry in entries:
        pid = entry[len(prefix):].split(".", 1)[0]
        if entry.startswith(prefix) and entry.endswith((".tmp", ".su")) and pid.isdigit() \
                and not pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(output.parent / entry)


def pid_alive(pid):
    """Whether process ``pid`` runs (a leftover of a live process is a write in progress)."""
    if os.name != "posix":  # Windows' os.kill(pid, 0) would send a Ctrl-C
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _cpu_flags():
    """The target flags for this CPU's vector units (from NumPy's table of its features), so that GCC
    vectorizes with them and compiles fmaf() to the instruction. They are part of the cache key: a cache
    shared with another CPU builds its own library."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # (NumPy 1.x)
        from numpy.core._multiarray_umath import __cpu_features__ as features
    if all(features.get(f) for f in ("AVX512F", "AVX512VL", "AVX512BW", "AVX512DQ", "FMA3")):
        return ["-mavx2", "-mfma", "-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mprefer-vector-width=512"]
    if features.get("AVX2") and features.get("FMA3"):
        return ["-mavx2", "-mfma"]
    return []


def _compiler(cplusplus=False):
    """(command, identity for the key): ``$CC`` or ``cc`` (``$CXX`` or ``c++`` for C++); its resolved path,
    size and date as identity (a stat, not a subprocess, at each process's first use)."""
    variable, default, language = ("CXX", "c++", "C++") if cplusplus else ("CC", "cc", "C")
    cc = os.environ.get(variable) or default
    found = shutil.which(cc)
    if found is None:
        raise CompileFailed(f"no {language} compiler: {cc!r} is not on PATH (set {variable})")
    real = os.path.realpath(found)
    stat = os.stat(real)
    return cc, (real, stat.st_size, stat.st_mtime_ns)


def _library(source, link=()):
    """The cached shared library of ``source`` (linked with ``link``: more libraries), compiled if it is not there yet."""
    cplusplus = source.suffix == ".cpp"  # (std_sort.cpp: libstdc++'s algorithms themselves)
    cc, identity = _compiler(cplusplus)
    flags = (_CXX_FLAGS if cplusplus else _FLAGS + _cpu_flags())
    code = source.read_bytes()
    folder = cache_dir()
    library = folder / f"{source.stem}-{digest(_VERSION, code, identity, *flags, *link)}.so"
    if library.is_file():
        return library
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompileFailed(f"cannot create the cache folder {folder} ({exc.strerror}); set MINILORA_CACHE_DIR")
    with open(folder / "native.lock", "w") as lock:
        _hold(lock)  # another process may be compiling it: wait for it, then find it there
        if not library.is_file():
            compile_atomically([cc, *flags, str(source), "-lm", *link], library)
    return library


def _hold(lock_file):
    try:
        import fcntl
    except ImportError:  # (Windows: no lock; a second compile writes the same file)
        return
    fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes


def _opened(source, link, mode):
    """``ctypes.CDLL`` of the cached library of ``source``; one that does not load ("file too short", "invalid ELF
    header": damaged on the disk, or cut short by a power loss) is built again once, as the CUDA emulator rebuilds
    its modules. Before, it was used as it was at every start: native code off for good (the MKL link among it,
    so products went through OpenBLAS, other bits than torch's), its reason only in ``why_unavailable``."""
    library = _library(source, link)
    try:
        return ctypes.CDLL(str(library), mode=mode)
    except OSError:
        library.unlink(missing_ok=True)
        return ctypes.CDLL(str(_library(source, link)), mode=mode)


def load(source=FLOAT32_KERNELS, link=(), mode=ctypes.DEFAULT_MODE):
    """The ctypes library of a C ``source`` (compiled on first use, then cached), or None when native code
    is off (``MINILORA_NATIVE=0``) or cannot be built or loaded: the reason is in ``why_unavailable``.
    ``link``: the linker's further arguments (shared libraries it needs: ``blas``' MKL link), part of the key;
    ``mode``: ``dlopen``'s flags."""
    with _LOCK:
        name = Path(source).name
        if os.environ.get("MINILORA_NATIVE", "1") == "0":
            why_unavailable[name] = "MINILORA_NATIVE=0"
            return None
        try:
            return _opened(Path(source), tuple(link), mode)
        except (CompileFailed, OSError) as exc:
            why_unavailable[name] = str(exc)
            return None


def address(a):
    """The data pointer of a NumPy array, for a ctypes call. A writable C-contiguous array lends its buffer
    to ctypes (0.3 us); ``__array_interface__`` builds a dict each time (1.1 us: a third of a tiny sum's
    cost), so it is the fallback (read-only, strided or empty arrays)."""
    if a.flags.writeable:
        try:
            return ctypes.addressof(ctypes.c_char.from_buffer(a))
        except (TypeError, ValueError, BufferError):
            pass
    return a.__array_interface__["data"][0]

