"""Run CUDA C kernels on the CPU: a small CUDA emulator that mirrors ``cupy.RawKernel``.

The same ``kernels/*.cu`` source that CuPy compiles for a GPU runs here on any machine with g++::

    import numpy as np
    from minilora.emulator import RawKernel

    add = RawKernel(r'''
    extern "C" __global__ void vadd(const float* a, const float* b, float* c, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n) c[i] = a[i] + b[i];
    }''', "vadd")
    a, b = np.random.rand(1000).astype(np.float32), np.random.rand(1000).astype(np.float32)
    c = np.empty_like(a)
    add((4,), (256,), (a, b, c, np.int32(1000)))      # grid, block, args -- as in CuPy

How it works (details in kernels/README.md):

1. The source is rewritten a little (the project's own ``#include "..."`` headers are pasted in with
   ``#line`` markers, and each ``__shared__`` declaration becomes a per-block allocation), wrapped with
   one launcher per ``__global__`` function (found in the preprocessed source, so macros and headers
   may define kernels; template kernels come from ``name_expressions``), and compiled by g++ together
   with the shim header ``kernels/emu/cuda_emu.h`` (plus stand-ins for ``<cooperative_groups.h>``,
   ``<cuComplex.h>``, ... in ``kernels/emu/include``) and the runtime ``kernels/emu/runtime.cpp`` into
   a shared library.  The library is cached by content hash, so each source compiles once per machine.
2. A launch hands its blocks to one or more OS threads (``workers=``), each running its blocks one
   after another; inside a block every CUDA thread is a fiber, and ``__syncthreads()`` / warp
   shuffles are real barriers between the fibers.  In a source that uses ``volatile``, each volatile
   load or store passes the turn to the next thread, so a warp's lanes take them in lockstep as on a
   GPU (the legacy unrolled last warp of a reduction sums right; ``racecheck=True`` still reports it).
3. Bugs become Python exceptions: ``BarrierError`` (divergent barriers: threads that have not exited waiting
   at different ``__syncthreads()``; since Volta a barrier waits for the non-exited threads only, so an early
   ``return`` or PTX ``exit`` before one is defined and runs), ``RaceError`` (results that
   depend on the thread schedule, with ``check_races=True``; shared- or global-memory hazards between
   threads with no barrier in between, with ``racecheck=True``), ``KernelFault`` (out-of-bounds accesses,
   with ``sanitize=True`` under AddressSanitizer in a child process; a read of shared memory no thread
   wrote, with ``initcheck=True``; assertions; crashes -- a null or wild pointer, an integer division by
   zero, a stack overflow, ``__trap()``, ``exit()`` -- and the undefined behaviour a GPU resolves
   differently from the CPU -- a misaligned access, a shift by the type's width or more, a float -> int
   cast of NaN or out of range, an index past a local, ``__constant__`` or ``__device__`` array (a GPU
   overwrites the thread's other variables silently; minilora/emulator_subscripts.py) -- named with the
   thread, block and source line; a launch past its
   ``timeout=``), ``CompileError`` (what nvcc refuses, including what only shows at launch: static
   ``__shared__`` arrays over 48 KB, a kernel called as a plain function or returning a value), ``CUDADriverError`` (what
   CUDA's driver refuses at launch, named as CuPy's: "CUDA_ERROR_INVALID_VALUE" for a block over 1024 threads
   or more shared memory than the kernel opted in to, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES" past its
   __launch_bounds__), ``KeyboardInterrupt`` (Ctrl-C during a launch), ``TypeError`` and ``ValueError`` for
   wrong arguments (a Python float for a ``float`` parameter among them: CuPy passes it as a double, which a
   GPU kernel misreads).  A grid or block dimension below 1 launches as 1, as CuPy's ``max(1, d)``.  The process
   keeps running.  Each launch runs on copies of the argument arrays fenced as a GPU's allocations
   (minilora/emulator_fence.py): an access that reaches the inaccessible page right after an array (or the one
   under a page below its start) is a KernelFault at its line naming the argument (each copy ends within 16
   bytes of that page, so a read one element past the end usually faults too), a write into those < 16 bytes
   of padding one found after the launch; a table of pointers (``float* const*``, or addresses in a ``const
   unsigned long long*``) is followed into the copies of the arrays it points to, given as a list of arrays or
   passed beside it.  What the fast mode cannot see: a read of the padding, and an access that jumps past the
   fence into other memory (use ``sanitize=True``).
   Device code's malloc / new take their memory from an arena of the emulator's own mappings, canary bytes around
   each block: a write past one is a KernelFault at the free() that finds it (or naming the malloc, when the launch
   ends), never glibc's heap -- the interpreter's -- corrupted under Python.
   Asynchronous copies (cp.async, <cuda_pipeline.h>, cuda::memcpy_async with cuda::pipeline / cuda::barrier,
   cooperative_groups::memcpy_async) land when a wait covers them -- the latest a GPU may -- so a read before the
   wait sees the old bytes; ``racecheck=True`` names it, and ``check_races=True``, whose other schedules land
   each copy as it is issued, sees the results differ.
   Thread block clusters (sm_90: ``__cluster_dims__``, ``cg::this_cluster()``, distributed shared memory through
   ``map_shared_rank``, PTX's barrier.cluster / mapa / ld.shared::cluster) run cluster after cluster, each
   cluster's blocks resident together (runtime.cpp, "thread block clusters"); only the compile-time shape, as CuPy's
   RawKernel has no launch-time cluster.
   Refused by name: dynamic parallelism, host code (launches and the runtime API), the inline PTX instructions
   minilora/emulator_ptx.py does not translate (the common idioms it does: %laneid, ld.global.nc, cvt, lop3,
   prmt, cp.async, ...), textures and surfaces, CUDA libraries (cuRAND, CUB beyond its block/warp collectives,
   Thrust, WMMA, ...).
"""
from __future__ import annotations

import bisect
import ctypes
import json
import numbers
import operator
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import emulator_attributes as _attributes
from . import emulator_subscripts as _subscripts
from . import emulator_runtime  # cupy.cuda.runtime's limits: the device heap's size, handed to each launch
from .emulator_memory import GlobalSymbol, ndarray
from .emulator_ptx import PtxError, split_top_level, translate_asm
from .native import CompileFailed, compile_atomically, digest as _digest, remove_leftovers, write_atomically

__all__ = [
    "RawKernel", "RawModule", "EmulatorError", "CompileError", "BarrierError", "RaceError",
    "KernelFault", "CUDADriverError", "DriverError", "KERNELS_DIR", "EMU_DIR", "cache_dir", "is_available",
    "default_workers",
]


def _find_kernels_dir() -> Path:
    """The ``kernels/`` folder: next to the package in a checkout, inside it in a wheel."""
    here = Path(__file__).resolve().parent
    # A wheel first (setup.py maps kernels/ to minilora/_kernels), then a checkout / editable install.
    for candidate in (here / "_kernels", here.parent / "kernels"):
        if (candidate / "emu" / "cuda_emu.h").is_file():
            return candidate
    return here.parent / "kernels"


KERNELS_DIR = _find_kernels_dir()
EMU_DIR = KERNELS_DIR / "emu"
_HEADER = EMU_DIR / "cuda_emu.h"
_RUNTIME = EMU_DIR / "runtime.cpp"
_INCLUDE = EMU_DIR / "include"  # stand-ins for <cuda_runtime.h>, <cuda_fp16.h>, ...
_CXX = os.environ.get("CXX", "g++")
_MAX_PORTABLE_CLUSTER = 8  # blocks per cluster that every sm_90 GPU runs (CUDA's portable cluster size)
_VERSION = "13"  # bump to invalidate every cached build (13: thread block clusters, cluster_dims in kernels.json; 12: `__device__ T name{init};` globals; 11: libraries linked -Bsymbolic-functions; 5: emu_release_stacks; 6: shuffle offsets mod 32, 16-bit conversions; 7: asynchronous copies in the runtime, shared windows; 8: tensor cores (warp_gather), mbarriers; 9: precompiled cuda_emu.h, address-space predicates; 10: a kernel called as a function is refused)


class EmulatorError(RuntimeError):
    """Base class of the emulator's errors."""


class CompileError(EmulatorError):
    """g++ rejected the kernel source (the message holds the compiler output)."""


class BarrierError(EmulatorError):
    """Threads of a block (or lanes of a warp) cannot all meet at the same barrier."""


class RaceError(EmulatorError):
    """The kernel's result depends on the order in which threads or blocks run."""


class DriverError(EmulatorError):
    """What the emulator's ``cuda.driver.CUDADriverError`` names, as ``cupy.cuda.driver.CUDADriverError``: a launch
    the driver refuses (CUDADriverError) and a kernel's fault (KernelFault), which on a GPU the next launch reports
    in the driver's words (CUDA_ERROR_ILLEGAL_ADDRESS, CUDA_ERROR_ASSERT, ...)."""


class KernelFault(DriverError, emulator_runtime.CUDARuntimeError):
    """The kernel accessed memory out of bounds, failed an assert, crashed (a bad pointer, an integer
    division by zero, a stack overflow, exit() or abort(): the message names the signal, the thread,
    the block and the source line), or ran past its ``timeout=``.  On a GPU such a fault is reported by a later
    call, as ``cupy.cuda.runtime.CUDARuntimeError`` (a synchronize, a copy: cudaErrorIllegalAddress, ...) or
    ``cupy.cuda.driver.CUDADriverError`` (the next launch): so it is the emulator's ``cuda.runtime.
    CUDARuntimeError`` and ``cuda.driver.CUDADriverError`` too, and code catching either on a GPU catches it here."""


class CUDADriverError(DriverError, ValueError):
    """A launch CUDA's driver refuses before any thread runs, as ``cupy.cuda.driver.CUDADriverError``: the message
    starts with the driver's error name (``CUDA_ERROR_INVALID_VALUE: invalid argument`` for a block of more than
    1024 threads, a grid dimension past its limit or more shared memory than allowed;
    ``CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: too many resources requested for launch`` past the kernel's
    ``__launch_bounds__``).  A ValueError too: the emulator's bad launch shapes were ValueErrors before."""


def _invalid_value(why: str) -> CUDADriverError:
    return CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument ({why})")


# Error codes of runtime.cpp's emu_launch (4, Ctrl-C, becomes KeyboardInterrupt in _launch; 7: what ptxas
# would refuse, such as static __shared__ arrays over 48 KiB, which the emulator sees only at launch).
_ERRORS = {1: BarrierError, 2: KernelFault, 3: EmulatorError, 5: KernelFault, 6: RaceError, 7: CompileError}
_E_FAULT, _E_INTERRUPTED = 2, 4
_LOCATION_MARK = "\x01LOC\x01"  # runtime.cpp's kLocationMark: where a crash message takes its source line


def _error_class(rc: int, message: str) -> type:
    """The exception for runtime.cpp's error code: a launch its checks refuse with CUDA's error name (static +
    dynamic shared memory over the limit) is the driver's refusal, CUDADriverError."""
    if rc == 3 and message.startswith("CUDA_ERROR_"):
        return CUDADriverError
    return _ERRORS.get(rc, EmulatorError)


def is_available() -> bool:
    """True when a C++ compiler is on PATH (the emulator's only requirement besides NumPy)."""
    return shutil.which(_CXX) is not None and _HEADER.is_file()


def cache_dir() -> Path:
    """Where compiled kernels live: $MINILORA_CACHE_DIR, else $XDG_CACHE_HOME/minilora/emu, else ~/.cache."""
    if os.environ.get("MINILORA_CACHE_DIR"):
        return Path(os.environ["MINILORA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "minilora" / "emu"


def _make_cache_folder(folder: Path) -> None:
    """Create a folder of the kernel cache; a cache that cannot be made says where the path came from."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        source = "MINILORA_CACHE_DIR" if os.environ.get("MINILORA_CACHE_DIR") else "the default cache location"
        raise EmulatorError(f"cannot create the emulator's kernel cache {folder} ({exc.strerror}); it comes "
                            f"from {source}: set MINILORA_CACHE_DIR to a writable folder") from None


# ------------------------------------------------------------------------------------------------
# Source rewriting: find the kernels and turn __shared__ declarations into per-block storage.
# ------------------------------------------------------------------------------------------------
_COMMENT_OR_STRING = re.compile(r"""//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'""", re.S)
_IDENT = re.compile(r"[A-Za-z_]\w*")
_ATTRS = re.compile(r"__align__\s*\([^()]*\)|alignas\s*\([^()]*\)|__attribute__\s*\(\((?:[^()]|\([^()]*\))*\)\)", re.S)
_NOT_A_NAME = {"int", "float", "double", "char", "short", "long", "unsigned", "signed", "bool", "void",
               "const", "volatile", "__restrict__", "size_t", "half", "__half", "__nv_bfloat16"}
_WORD_CHAR = re.compile(r"\w")


def _words(pattern: str, text: str):
    """re.finditer(r"\b" + pattern, text) for a pattern that starts with a word: re jumps from one occurrence of a
    pattern's literal first word to the next, but not when a \b comes first -- then it tries every character, ~50x
    slower on a preprocessed source's ~1 MB of headers.  The \b is checked here instead, and after a match that
    fails it the search goes on from the next character, as re's would."""
    compiled, pos = re.compile(pattern), 0
    while (m := compiled.search(text, pos)) is not None:
        if m.start() and _WORD_CHAR.match(text, m.start() - 1):
            pos = m.start() + 1
            continue
        yield m
        pos = max(m.end(), m.start() + 1)


def _mask(src: str) -> str:
    """Blank out comments and string contents (same length, newlines kept) so regexes see only code."""
    def blank(m):
        s = m.group(0)
        keep = s[0] if s[0] in "\"'" else ""
        inner = re.sub(r"[^\n]", " ", s[len(keep): len(s) - len(keep)])
        return keep + inner + keep
    return _COMMENT_OR_STRING.sub(blank, src)


# One pattern per kind of bracket, matching its opener and closer only: _close_paren visits those two characters
# (the regex engine skips the rest), not every character of a preprocessed source's megabytes of headers
_BRACKETS = {opener: re.compile("[" + re.escape(opener + closer) + "]") for opener, closer in
             (("(", ")"), ("[", "]"), ("{", "}"), ("<", ">"))}


def _close_paren(text: str, i: int) -> int:
    """Index of the bracket closing the one at text[i]."""
    opener, depth = text[i], 0
    for m in _BRACKETS[opener].finditer(text, i):
        if m.group() == opener:
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return m.start()
    raise CompileError(f"unbalanced '{opener}' at offset {i}")


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split at `sep` outside (), [], {} and <> (template arguments)."""
    return split_top_level(text, sep, brackets="([{<")


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _param_name(param: str, i: int) -> str:
    p = re.sub(r"=.*", "", param, flags=re.S)
    p = re.sub(r"\[[^\]]*\]\s*$", "", p.strip()).strip()
    idents = _IDENT.findall(p)
    if len(idents) >= 2 and not p.endswith(("*", "&")) and idents[-1] not in _NOT_A_NAME:
        return idents[-1]
    return f"arg{i}"


# What may stand between `__global__` (or its return type) and a kernel's name: attributes with parentheses.
_KERNEL_ATTRIBUTES = ("__launch_bounds__", "__attribute__", "alignas", "__align__", "__maxnreg__", "__cluster_dims__")


def _cluster_dims(kernel_head: str, arguments: str) -> tuple[int, int, int]:
    """The (x, y, z) of `__cluster_dims__(arguments)`; missing dimensions are 1, as in CUDA."""
    dims = [_int_expression(a) for a in _split_top(arguments)] if arguments.strip() else []
    if not 1 <= len(dims) <= 3 or None in dims:
        raise CompileError(f"__cluster_dims__({arguments.strip()}) on '{kernel_head.strip()}': minilora's CUDA emulator "
                           "reads a kernel's cluster shape from one to three integer constants (as nvcc needs "
                           "constants there too)")
    return tuple(dims + [1] * (3 - len(dims)))


def _find_kernels(masked: str, templates: bool = False, bounds: dict | None = None,
                  namespaces: dict | None = None, clusters: dict | None = None) -> dict[str, list[str]]:
    """Names and parameter names of the non-template __global__ functions (or, with templates=True, of
    the template ones, which are launched through RawModule's name_expressions), in source order.
    `bounds` receives each kernel's __launch_bounds__ thread limit where it is a plain number; `namespaces`
    the namespace of each kernel declared in one ("a::b"); `clusters` the (x, y, z) of each __cluster_dims__."""
    kernels: dict[str, list[str]] = {}
    where: dict[str, int] = {}
    for m in _words(r"__global__\b", masked):
        line_start = masked.rfind("\n", 0, m.start()) + 1
        if masked[line_start:m.start()].lstrip().startswith("#"):
            continue  # inside a macro definition
        prev = max(masked.rfind(c, 0, m.start()) for c in ";{}")
        if (re.search(r"\btemplate\b", masked[prev + 1:m.start()]) is not None) != templates:
            continue  # a template kernel has no single address; CuPy needs name_expressions for it
        j, max_threads, cluster = m.end(), None, None
        while True:
            mm = re.compile(r"([A-Za-z_]\w*)\s*\(").search(masked, j)
            if mm is None:
                break
            if mm.group(1) in _KERNEL_ATTRIBUTES:
                j = _close_paren(masked, mm.end() - 1) + 1
                if mm.group(1) == "__cluster_dims__":
                    cluster = _cluster_dims(masked[m.start():mm.start()], masked[mm.end():j - 1])
                if mm.group(1) == "__launch_bounds__":
                    max_threads = _split_top(masked[mm.end():j - 1])[0].strip()
                    if not templates:
                        max_threads = _int_expression(max_threads)
                    else:  # kept as text with the template's parameters: each instance is checked at launch
                        max_threads = (max_threads, _template_parameters(masked[prev + 1:m.start()]))
                continue
            name, open_ = mm.group(1), mm.end() - 1
            params = masked[open_ + 1:_close_paren(masked, open_)].strip()
            names = [] if params in ("", "void") else [_param_name(p, i) for i, p in enumerate(_split_top(params))]
            if name not in kernels or all(n.startswith("arg") for n in kernels[name]):
                kernels[name] = names
            where.setdefault(name, m.start())
            if bounds is not None and max_threads is not None:
                bounds[name] = max_threads
            if clusters is not None and cluster is not None:
                clusters[name] = cluster
            break
    if namespaces is not None and where:
        names = list(where)
        namespaces.update({n: ns for n, ns in zip(names, _namespaces_at(masked, [where[n] for n in names])) if ns})
    return kernels


def _template_parameters(header: str) -> list[tuple[str, str | None]]:
    """(name, default) of each parameter of the `template <...>` in `header` (`int BLOCK = 128` -> ("BLOCK",
    "128")); an unnamed one gets the name ""."""
    open_ = header.find("<", header.find("template"))
    try:
        close = _close_paren(header, open_) if open_ >= 0 else -1
    except CompileError:  # `template <bool B = (1 < 2)>`: not worth parsing; the bound is then not checked
        return []
    found = []
    for param in _split_top(header[open_ + 1:close]) if close > 0 else ():
        declaration, _, default = param.partition("=")
        names = _IDENT.findall(declaration)
        found.append((names[-1] if len(names) > 1 else "", default.strip() or None))
    return found


def _instance_bound(bound, expression: str) -> int | None:
    """A template kernel's __launch_bounds__ for one name expression ("k<64, float>"): the bound's text with the
    template's parameters replaced by the expression's arguments (or their defaults); None if not a number."""
    text, params = bound
    open_ = expression.find("<")
    args = _split_top(expression[open_ + 1:expression.rfind(">")]) if open_ >= 0 else []
    values = {}
    for k, (name, default) in enumerate(params):
        value = args[k].strip() if k < len(args) else default
        if name and value is not None:
            values[name] = value
    if values:
        text = re.sub(r"\b(" + "|".join(map(re.escape, values)) + r")\b", lambda m: f"({values[m.group(1)]})", text)
    return _int_expression(text)


def _find_constants(masked: str) -> dict[str, bool]:
    """File-scope __constant__ variables of a preprocessed source: name -> whether it has an initializer."""
    found: dict[str, bool] = {}
    depth, pos = 0, 0  # the braces open at pos, counted on from the previous match (not from the start each time)
    for m in _words(r"__constant__\b", masked):
        depth += masked.count("{", pos, m.start()) - masked.count("}", pos, m.start())
        pos = m.start()
        if depth:
            continue  # inside a namespace or a function: not reachable by name from the wrapper
        name, initialized = _declared_variable(masked[m.end():masked.find(";", m.end())])
        if name:
            found[name] = initialized
    return found


# `TYPE NAME(init)`: a direct-initialised variable when the parentheses hold a literal (`x(0)`, `a(1.5f)`, `m(-1)`,
# `f(true)`); `TYPE NAME(Other)` is a function declaration to C++ too (its most vexing parse), so a name is not enough.
_DIRECT_INITIALIZER = re.compile(r"([A-Za-z_]\w*)\s*\(\s*[-+~!(\s]*(?:\d|\.\d|'|true\b|false\b|nullptr\b)[^;]*\)\s*$")


def _is_direct_initialization(masked: str, opening: int) -> bool:
    """Whether the parenthesis at `opening`, after a declared name, holds a direct initializer (`x(0);`) rather than
    a function's parameters."""
    end = _close_paren(masked, opening)
    start = masked.rfind("\n", 0, opening) + 1
    return bool(_DIRECT_INITIALIZER.search(masked[start:end + 1])) and re.match(r"\s*[;,]", masked[end + 1:]) is not None


def _declared_variable(declaration: str) -> tuple[str | None, bool]:
    """The name a file-scope `TYPE NAME[N]... = init`, `TYPE NAME{init}` or `TYPE NAME(init)` declares (the text after
    its __constant__ / __device__), and whether it has an initializer."""
    direct = _DIRECT_INITIALIZER.search(declaration.strip())
    if direct and "=" not in declaration[:direct.start()] and "{" not in declaration[:direct.start()]:
        return direct.group(1), True
    start = re.search(r"[={]", declaration)
    head = declaration[:start.start()] if start else declaration
    name = re.search(r"([A-Za-z_]\w*)\s*(?:\[[^\]]*\]\s*)*$", head.strip())
    return (name.group(1) if name else None), start is not None


def _namespaces_at(masked: str, positions: list[int]) -> list[str]:
    """The namespace ("a::b", or "" at global scope) enclosing each position of a masked source, in one pass
    over its braces; an anonymous namespace adds nothing to the path."""
    # (one character class, not nested repeats: on the megabytes of preprocessed standard headers, a pattern
    # like (?:\w*\s*(?:::)?)* backtracks exponentially wherever a `namespace` is not followed by `{`)
    opened_by_namespace = {m.end() - 1: re.sub(r"\s+", "", m.group(1)).strip(":")
                           for m in _words(r"namespace\b([\w\s:]*)\{", masked)}
    stack, found, targets = [], {}, iter(sorted(set(positions)))
    target = next(targets, None)
    for brace in re.finditer(r"[{}]", masked):
        while target is not None and target < brace.start():
            found[target] = "::".join(name for name in stack if name)
            target = next(targets, None)
        if brace.group(0) == "{":
            stack.append(opened_by_namespace.get(brace.start(), ""))
        elif stack:
            stack.pop()
    while target is not None:
        found[target] = "::".join(name for name in stack if name)
        target = next(targets, None)
    return [found[p] for p in positions]


def _cpp_linkage_kernels(masked: str) -> list[str]:
    """Non-template __global__ functions declared without extern "C" (not in an extern "C" { } block
    either): their symbol is a mangled C++ name, so CuPy finds them by their plain name only through
    name_expressions.  (String contents are blanked in `masked`: extern "C" reads extern " ".)"""
    c_blocks = []
    for m in _words(r'extern\s*"\s*"\s*\{', masked):
        c_blocks.append((m.end(), _close_paren(masked, m.end() - 1)))
    found = []
    for m in _words(r"__global__\b", masked):
        line_start = masked.rfind("\n", 0, m.start()) + 1
        if masked[line_start:m.start()].lstrip().startswith("#"):
            continue
        prefix = masked[max(masked.rfind(c, 0, m.start()) for c in ";{}") + 1:m.start()]
        if re.search(r"\btemplate\b", prefix) or re.search(r'\bextern\s*"\s*"', prefix):
            continue
        if any(lo <= m.start() < hi for lo, hi in c_blocks):
            continue
        name = re.compile(r"([A-Za-z_]\w*)\s*\(").search(masked, m.end())
        while name and name.group(1) in _KERNEL_ATTRIBUTES:
            name = re.compile(r"([A-Za-z_]\w*)\s*\(").search(masked, _close_paren(masked, name.end() - 1) + 1)
        if name:
            found.append(name.group(1))
    return found


def _find_device_globals(masked: str) -> dict[str, bool]:
    """File-scope __device__ (and __managed__, which are __device__ variables too) variables, not functions:
    name -> True.  CuPy's get_global reaches them as it does __constant__ ones.  They count as initialized: C++ and
    PTX start them at zero, as a GPU does."""
    found: dict[str, bool] = {}
    depth, pos = 0, 0
    for m in _words(r"__(?:device|managed)__\b", masked):
        depth += masked.count("{", pos, m.start()) - masked.count("}", pos, m.start())
        pos = m.start()
        if depth:
            continue
        stop = re.compile(r"[;({=]").search(masked, m.end())
        if stop is not None and stop.group() == "(":  # a function declared __device__, or `T name(literal);`
            if not _is_direct_initialization(masked, stop.start()):
                continue
            stop = re.compile(r"[;,]").search(masked, _close_paren(masked, stop.start()) + 1)
        if stop is None:
            continue
        statement = masked[max(masked.rfind(";", 0, m.start()), masked.rfind("}", 0, m.start())) + 1:stop.start()]
        if re.search(r"\b(extern|typedef|using|struct|class|union|enum)\b", statement):
            continue  # declared here, defined elsewhere; or a type (`T name{0};` is a variable, braces its value)
        name, _ = _declared_variable(masked[m.end():stop.start()])
        if name:
            found[name] = True
    return found


def _int_expression(text: str) -> int | None:
    """The value of a constant integer expression such as `256` or `(16 * 16)`; None for anything else
    (a template parameter, a constexpr name): such a bound is then not checked at launch."""
    text = re.sub(r"(?<=\d)[uUlL]+\b", "", text.strip())
    if not re.fullmatch(r"[\d\s+\-*/%()]+", text) or not text.strip():
        return None
    try:
        value = eval(text.replace("/", "//"), {"__builtins__": {}})  # digits and arithmetic only (checked above)
    except (SyntaxError, ZeroDivisionError, TypeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


@dataclass
class _Rewritten:
    text: str            # the source with __shared__ declarations replaced (same line numbers)
    prelude: str         # #defines for file-scope __shared__ variables
    kernels: dict        # kernel name -> parameter names
    constants: dict = None  # __constant__ name -> has an initializer (filled in by the build)
    constant_memory: tuple = ()  # the names among them declared __constant__ (not __device__): __isConstant's
    renamed: set = frozenset()  # kernels given a new name in the text (_rename_kernels)
    namespaces: dict = None  # kernel found in a namespace -> that namespace ("a::b")
    shared_names: tuple = ()  # the __shared__ variables declared (their guard pages name an index past them)


def _bracket_depths(text: str) -> list[int]:
    """How deep inside () or [] each character of `text` is (a bracket itself counts as inside).  Not <>:
    `BLOCK >= 64` in an array size would close a template bracket that never opened."""
    depths, depth = [], 0
    for ch in text:
        depth += ch in "(["
        depths.append(depth)
        depth -= ch in ")]"
    return depths


def _check_shared_declaration(text: str, line: int) -> None:
    """Refuse, in nvcc's words where nvcc refuses too, the __shared__ declarations the rewriting cannot take."""
    if not text.strip():
        raise CompileError(f"line {line}: cannot parse this __shared__ declaration (no ';' ends it)")
    outside = "".join(ch for ch, depth in zip(text, _bracket_depths(text)) if depth == 0)
    if re.search(r"(?<![=<>!])=(?!=)", outside) or re.search(r"[\w\]]\s*\{", text):
        raise CompileError(f"line {line}: initializer not allowed for __shared__ variable (nvcc refuses it too): "
                           "shared memory starts out indeterminate in every block; let the threads write it, then "
                           "__syncthreads()")
    if "{" in text or "}" in text:
        raise CompileError(f"line {line}: cannot parse this __shared__ declaration")


def _logical_line_end(text: str, pos: int) -> int:
    """Where the line holding pos ends, following backslash continuations (as in a multi-line #define)."""
    while True:
        end = text.find("\n", pos)
        if end < 0:
            return len(text)
        if not text[:end].rstrip(" \t\r").endswith("\\"):
            return end
        pos = end + 1


def _logical_line_start(text: str, pos: int) -> int:
    """Where the line holding pos starts, following backslash continuations back to a directive's first line."""
    start = text.rfind("\n", 0, pos) + 1
    while start > 0 and text[:start - 1].rstrip(" \t\r").endswith("\\"):
        start = text.rfind("\n", 0, start - 1) + 1
    return start


def _in_macro(masked: str, pos: int) -> bool:
    """Whether pos lies in a preprocessor directive (its first line or a backslash-continued one)."""
    return masked[_logical_line_start(masked, pos):pos].lstrip().startswith("#")


# `#define SMEM __shared__` (with qualifiers such as __align__(16) or volatile, but nothing declared)
_SHARED_KEYWORD_MACRO = re.compile(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)[ \t]+((?:(?:__shared__|static|volatile|"
                                   r"extern|__align__[ \t]*\([^()\n]*\)|alignas[ \t]*\([^()\n]*\))[ \t]*)+)$", re.M)


def _expand_shared_keyword_macros(src: str) -> str:
    """Write out the uses of a macro that stands for __shared__ (`SMEM float tile[32];`), so that the rewriting
    below sees the declaration; the #define itself stays (line numbers are kept)."""
    masked = _mask(src)
    macros = {m.group(1): (m.group(2).strip(), m.span()) for m in _SHARED_KEYWORD_MACRO.finditer(masked)
              if re.search(r"\b__shared__\b", m.group(2))}
    if not macros:
        return src
    definitions = [span for _, span in macros.values()]

    def in_condition(pos: int) -> bool:  # `#ifdef SMEM`, `#undef SMEM`: the name, not a use
        directive = masked[_logical_line_start(masked, pos):pos]
        return directive.lstrip().startswith("#") and re.match(r"\s*#\s*define\b", directive) is None

    edits = [(m.start(), m.end(), macros[m.group(0)][0]) for m in re.finditer(r"\b(?:" + "|".join(macros) + r")\b", masked)
             if not any(a <= m.start() < b for a, b in definitions) and not in_condition(m.start())]
    for begin, end, body in reversed(edits):
        src = src[:begin] + body + src[end:]
    return src


# `#define DECLARE(n) __shared__ float n[32];` (a function-like or plain macro that declares shared memory)
_MACRO_DEFINITION = re.compile(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)(\([^()]*\))?", re.M)


def _shared_declaring_macros(src: str, masked: str) -> dict:
    """The macros whose body declares __shared__ memory: name -> (parameters or None, body on one line, span)."""
    macros = {}
    for m in _MACRO_DEFINITION.finditer(masked):
        end = _logical_line_end(masked, m.start())
        if not re.search(r"\b__shared__\b", masked[m.end():end]):
            continue
        params = [p.strip() for p in m.group(2)[1:-1].split(",")] if m.group(2) else None
        macros[m.group(1)] = (params, re.sub(r"\\[ \t]*\r?\n", " ", src[m.end():end]), (m.start(), end))
    return macros


def _enclosing_braces(masked: str, pos: int) -> list[int]:
    """Where the braces still open at pos were opened, outermost first."""
    stack = []
    for m in re.finditer(r"[{}]", masked[:pos]):
        if m.group(0) == "{":
            stack.append(m.start())
        elif stack:
            stack.pop()
    return stack


def _namespace_depth(masked: str, pos: int) -> int | None:
    """How many namespace (or extern "C") blocks enclose pos; None when a function's or a class's body does."""
    braces = _enclosing_braces(masked, pos)
    for brace in braces:
        before = masked[max(0, brace - 300):brace]
        if not re.search(r'(?:\bnamespace(?:\s+[A-Za-z_][\w:]*)?|\bextern\s*"\s*")\s*$', before):
            return None
    return len(braces)


def _expand_file_scope_shared_macros(src: str) -> str:
    """Write out, where it is used at file scope, a macro that declares __shared__ memory (`DECLARE(tile)` between
    two functions), so that the rewriting below sees a file-scope declaration.  Rewritten in the macro's body, it
    would be a function's statement: a reference bound when the library loads, outside any block (that crashed
    Python).  Uses inside functions keep the macro (its rewritten body serves them); line numbers are kept."""
    masked = _mask(src)
    macros = _shared_declaring_macros(src, masked)
    if not macros:
        return src
    edits = []
    for m in re.finditer(r"\b(?:" + "|".join(macros) + r")\b", masked):
        params, body, definition = macros[m.group(0)]
        if any(a <= m.start() < b for _, _, (a, b) in macros.values()) or _in_macro(masked, m.start()):
            continue  # a definition, or a use inside another directive
        if _namespace_depth(masked, m.start()) is None:
            continue  # inside a function
        end, text = m.end(), body
        if params is not None:
            opening = re.match(r"\s*\(", masked[end:])
            if not opening:
                continue
            close = _close_paren(masked, end + opening.end() - 1)
            args = _split_top(src[end + opening.end():close]) if src[end + opening.end():close].strip() else []
            for param, arg in zip(params, args):
                text = re.sub(rf"\b{re.escape(param)}\b", arg.strip(), text)
            end = close + 1
        edits.append((m.start(), end, re.sub(r"\s*##\s*", "", text).strip()))
    for begin, end, text in reversed(edits):
        src = src[:begin] + text + src[end:]
    return src


_NOT_AN_INITIALIZED_NAME = {"struct", "union", "class", "enum", "const", "volatile", "noexcept", "override", "final"}


def _check_struct_members(body: str, line: int) -> None:
    """A struct defined in a __shared__ declaration may not initialize its members (`float v = 0;` or `{0}`):
    that is an initializer of the shared variable, which nvcc refuses; nor may it have a constructor."""
    depth, top = 0, []
    for ch in body[1:-1]:  # what lies directly in the struct's braces, not in nested ones (member functions)
        depth += ch == "{"
        top.append(ch if depth == 0 else " ")
        depth -= ch == "}"
    members = "".join(ch for ch, d in zip("".join(top), _bracket_depths("".join(top))) if d == 0)
    inner, depth, braced = body[1:-1], 0, False
    for i, ch in enumerate(inner):  # `float v{0};` directly in the struct (not `struct P {`, not `f() const {`)
        if ch == "{" and depth == 0:
            before = re.search(r"(?:\b(struct|union|class|enum)\s+)?([A-Za-z_]\w*|\])\s*$", inner[:i])
            braced = braced or bool(before and not before.group(1) and before.group(2) not in _NOT_AN_INITIALIZED_NAME)
        depth += (ch == "{") - (ch == "}")
    if re.search(r"(?<![=<>!])=(?!=)", members) or braced:
        raise CompileError(f"line {line}: initializer not allowed for __shared__ variable (nvcc refuses it too): a "
                           "member of a struct declared __shared__ cannot have a default value; let the threads "
                           "write it, then __syncthreads()")


def _class_body(masked: str, name: str) -> tuple[str, int] | None:
    """The body (braces included) and position of the definition of struct/class/union `name` in a masked
    source, or None when it is not defined there (a type from a header the emulator does not read)."""
    for m in re.finditer(r"\b(?:struct|class|union)\s+(?:(?:alignas|__align__)\s*\([^()]*\)\s*)?" + re.escape(name) +
                         r"\b\s*(?:final\s*)?(?::[^;{]*)?\{", masked):
        return masked[m.end() - 1:_close_paren(masked, m.end() - 1) + 1], m.start()
    return None


def _non_empty_construction(body: str, name: str) -> str | None:
    """Why objects of the class whose body this is are not "empty-constructed" in CUDA's sense (programming
    guide, "Initialization": a __shared__ variable's class may only have a trivial or an empty default
    constructor and destructor -- no parameters, no member initializers, an empty body -- and no virtual
    functions), or None."""
    top, depth = [], 0
    for ch in body[1:-1]:  # what lies directly in the braces, with member function bodies kept as "{...}"
        if ch == "{":
            depth += 1
            top.append("{" if depth == 1 else "")
        elif ch == "}":
            depth -= 1
            top.append("}" if depth == 0 else "")
        else:
            top.append(ch if depth == 0 else ("x" if not ch.isspace() else " "))
    text = "".join(top)
    if re.search(r"\bvirtual\b", text):
        return "has virtual functions"
    special = re.compile(r"(~?)\b" + re.escape(name) + r"\s*\(([^()]*)\)\s*(?:noexcept\s*)?(:[^{;]*)?(\{[^{}]*\}|=\s*default\s*;|;)")
    declared_default = False
    for m in special.finditer(text):
        destructor, params, inits, rest = m.group(1), m.group(2).strip(), m.group(3), m.group(4)
        if not destructor and params not in ("", "void"):
            continue  # another constructor: not the one a __shared__ declaration calls
        what = "destructor" if destructor else "default constructor"
        declared_default = declared_default or not destructor
        if inits:
            return f"has a {what} with a member initializer list"
        if rest.startswith("{") and rest[1:-1].strip():
            return f"has a {what} whose body is not empty"
        if rest == ";":
            return f"declares a {what} without defining it here"
    if not declared_default:
        members = re.sub(r"\)[^;{}()]*\{[^{}]*\}", ");", text)  # member functions' bodies out, `x{0};` kept
        for statement in members.split(";"):
            if re.search(r"\b(?:static|using|typedef|enum|friend|operator)\b", statement) or "(" in statement:
                continue  # not an instance data member
            if re.search(r"(?<![=<>!])=(?!=)", statement) or re.search(r"[\w\]]\s*\{[^{}]*\}\s*$", statement):
                return "gives a member a default value (its implicit default constructor initializes it)"
    return None


def _check_shared_class(masked: str, type_text: str, var: str, line: int) -> None:
    """Refuse, as nvcc does, a __shared__ variable whose class constructs it in a way CUDA cannot: nothing runs
    a __shared__ variable's constructor on a GPU, and here the memory would silently stay 0xFF bytes."""
    if "*" in type_text or "&" in type_text:
        return  # a pointer to the class constructs nothing
    words = [w for w in _IDENT.findall(re.sub(r"<.*>", "", type_text)) if w not in _NOT_A_NAME and w not in
             ("struct", "class", "union", "static", "extern", "typename")]
    if not words:
        return
    name = words[-1]
    found = _class_body(masked, name)
    if found is None:
        return
    reason = _non_empty_construction(found[0], name)
    if reason:
        raise CompileError(f"line {line}: __shared__ variable '{var}' has class type '{name}' (line "
                           f"{_line_of(masked, found[1])}), which {reason}: initialization is not supported for "
                           "__shared__ variables (nvcc refuses it too; a GPU runs no constructor for shared memory). "
                           f"Give {name} an empty constructor ({name}() {{}} or = default), then let the threads "
                           "write the members and __syncthreads()")


_BUILTIN_TYPE_WORDS = {"const", "volatile", "struct", "class", "unsigned", "signed", "char", "short", "int", "long",
                       "float", "double", "bool", "__grid_constant__"}


def _grid_constant_by_reference(src: str) -> str:
    """Each ``__grid_constant__`` kernel parameter made a const reference (``const P p`` -> ``const P &p``, on
    the same line): it then names the launch's one copy of the argument, shared by every thread, as a GPU's
    grid-constant parameter is, so that ``__isGridConstant(&p)`` can tell it from a thread's local copy."""
    masked = _mask(src)
    inserts = []
    for m in re.finditer(r"\b__grid_constant__\b", masked):
        if _in_macro(masked, m.start()):
            continue
        depth, end = 0, m.end()
        while end < len(masked) and not (depth == 0 and masked[end] in ",)"):
            depth += masked[end] in "([{<"
            depth -= masked[end] in ")]}>"
            end += 1
        words = list(re.finditer(r"[A-Za-z_]\w*", masked[m.end():end]))
        named = len([w for w in words if w.group() not in ("const", "volatile", "struct", "class")]) >= 2 and \
            words[-1].group() not in _BUILTIN_TYPE_WORDS and not masked[m.end():end].rstrip().endswith((">", "*"))
        inserts.append(m.end() + words[-1].start() if named else len(masked[:end].rstrip()))
    for pos in reversed(inserts):
        src = src[:pos] + "&" + src[pos:]
    return src


def _declared_alignment(text: str) -> str:
    """The alignment a __shared__ declaration asks with alignas(X), __align__(X) or __attribute__((aligned(X))), as
    a C++ constant expression (X may be a number or a type: __emu::align_arg takes both); "0" when it asks none."""
    expr = "0"
    for attr in _ATTRS.finditer(text):
        a = attr.group()
        m = re.fullmatch(r"(?:alignas|__align__)\s*\((.*)\)", a, re.S) or re.search(r"\baligned\s*\(((?:[^()]|\([^()]*\))*)\)", a)
        arg = m.group(1).strip() if m else ("16" if re.search(r"\baligned\b", a) else "")
        if arg:
            expr = f"__emu::align_max({expr}, __emu::align_arg<{arg}>())"
    return expr


def _rewrite_shared(src: str) -> _Rewritten:
    """Replace every __shared__ declaration by per-block storage provided by the runtime.

    ``__shared__ float tile[16][16];`` inside a function becomes
    ``auto& tile = __emu_shared_var<float [16][16], ID>("tile", __FILE__, __LINE__);``: a reference
    to this block's copy.  ``extern __shared__ float s[];`` becomes a pointer to the block's dynamic
    shared memory.  At file scope the same expressions are bound with #define instead.  Each
    replacement keeps the declaration's line count, so compiler messages and sanitizer reports
    point at the user's lines.
    """
    src = _expand_file_scope_shared_macros(_expand_shared_keyword_macros(src))
    masked = _mask(src)
    out, prelude, last, ident, shared_names = [], [], 0, 0, []
    for m in re.finditer(r"\b__shared__\b", masked):
        start = m.start()
        while True:  # qualifiers written before __shared__ belong to the declaration
            mm = re.search(r"(?:\b(?:static|volatile|extern|const)\b|__align__\s*\([^()]*\)|alignas\s*\([^()]*\))\s*$",
                           masked[max(0, start - 200):start])
            if not mm or mm.end() == mm.start():
                break
            start = max(0, start - 200) + mm.start()
        line_start = masked.rfind("\n", 0, start) + 1
        in_macro = _in_macro(masked, start)
        if in_macro and ";" not in masked[m.end():_logical_line_end(masked, m.end())]:
            continue  # a macro that merely mentions __shared__ (e.g. #define SMEM __shared__ __align__(16))
        if masked[line_start:start].lstrip().startswith("#"):
            line_start = start  # `#define DECLARE(T, name) __shared__ T name[32];`: the declaration starts here
        # The type may come first too: `extern float __shared__ s[];` is as valid as `extern __shared__ float s[];`.
        type_first = ""
        if masked[line_start:start].strip() and not masked[line_start:start].rstrip().endswith((";", "{", "}", ")", ":")):
            words = re.fullmatch(r"(\s*)((?:(?:static|volatile|extern|const)\s+)*)([A-Za-z_][\w:<>, ]*?[\w>])\s*",
                                 masked[line_start:start])
            if words:
                type_first = words.group(3)
                start = line_start + len(words.group(1))
        line = _line_of(src, start)
        # `__shared__ struct [Name] {...} s;` (or union, class): the type is defined on its own, with the same
        # text, and the declaration then names it; an anonymous one gets a name.
        type_def, declared_from = "", m.end()
        struct = re.match(r"(\s*(?:(?:volatile|const)\s+)*)(struct|union|class)\b((?:\s*(?:alignas|__align__)\s*"
                          r"\([^()]*\)|\s*__attribute__\s*\(\(.*?\)\))*)(\s*[A-Za-z_]\w*(?:\s*##\s*\w+)*)?[^;{]*\{",
                          masked[m.end():], re.S)
        if struct and not type_first:
            close = _close_paren(masked, m.end() + struct.end() - 1)
            type_name = (struct.group(4) or "").strip() or f"__emu_shared_{struct.group(2)}_{ident}"
            if in_macro and not struct.group(4):  # one type per expansion: pasted with the variable's name (which
                variable = re.match(r"\s*([A-Za-z_]\w*)", masked[close + 1:])  # two expansions must differ in)
                if variable:
                    type_name = f"__emu_shared_{struct.group(2)}_ ## {variable.group(1)}"
            name_at = m.end() + struct.end(3)  # after the keyword and its attributes
            type_def = (src[m.end() + struct.end(1):name_at] + ("" if struct.group(4) else " " + type_name)
                        + src[name_at:close + 1] + ";")
            type_first = f"{struct.group(1).strip()} {struct.group(2)} {type_name}".strip()
            declared_from = close + 1
            _check_struct_members(masked[m.end() + struct.end() - 1:close + 1], _line_of(src, m.end()))
        end, ends_with_semicolon = masked.find(";", declared_from), True
        if in_macro and not 0 <= end < _logical_line_end(masked, declared_from):
            # `#define SCRATCH(T) __shared__ struct { T v[32]; } s` with the ';' written where the macro is used:
            # the declaration ends with the macro (the use's ';' then ends an empty statement)
            end, ends_with_semicolon = _logical_line_end(masked, declared_from), False
        _check_shared_declaration(masked[declared_from:end] if end >= 0 else "", line)
        quals = _ATTRS.sub(" ", masked[start:m.start()])
        body = (type_first + " " + _ATTRS.sub(" ", masked[declared_from:end])).strip()
        cv = " ".join(q for q in ("volatile", "const") if re.search(rf"\b{q}\b", quals))
        is_extern = re.search(r"\bextern\b", quals) is not None
        # A macro's declaration is taken as a statement: the macro is most likely used inside a function.
        namespaces = None if in_macro else _namespace_depth(masked, start)
        file_scope = namespaces is not None
        decls = _split_top(body)
        first = re.fullmatch(r"(.*?)\b([A-Za-z_]\w*)\s*((?:\[[^\]]*\]\s*)*)", decls[0].strip(), re.S)
        if not first or not first.group(1).strip():
            raise CompileError(f"line {line}: cannot parse the __shared__ declaration '{body}'")
        base = (cv + " " + first.group(1)).strip()
        if not type_def:
            _check_shared_class(masked, first.group(1), first.group(2), line)
        base_no_ptr = base.rstrip("*& \t")
        items = [(base, first.group(2), first.group(3).strip())]
        for d in decls[1:]:
            dm = re.fullmatch(r"\s*([*\s]*)([A-Za-z_]\w*)\s*((?:\[[^\]]*\]\s*)*)", d)
            if not dm:
                raise CompileError(f"line {line}: cannot parse the __shared__ declarator '{d.strip()}'")
            items.append((base_no_ptr + dm.group(1).replace(" ", ""), dm.group(2), dm.group(3).strip()))
        stmts = []
        alignment = _declared_alignment(src[start:m.start()] + " " + src[declared_from:end])
        for typ, name, dims in items:
            shared_names.append(name)
            if is_extern:
                if dims.replace(" ", "") != "[]":
                    raise CompileError(f"line {line}: extern __shared__ '{name}' must be declared as {name}[]")
                expr = f"(({typ}*)__emu_dynamic_shared())"
                decl = f"{typ}* const {name} = {expr};"
            else:
                expr = f'(__emu_shared_var<{typ} {dims}, {ident}, {alignment}>("{name}", __FILE__, __LINE__))'
                # in a function: a lambda marks the spot, one variable per template instantiation and macro expansion
                local = f'(__emu_shared_local<{typ} {dims}, {alignment}>([] {{}}, "{name}", __FILE__, __LINE__))'
                decl = f"auto& {name} = {local};"
                ident += 1
            if file_scope and namespaces:
                # in a namespace: an accessor there, so that `tiles::q[i]` still names it (a #define of the
                # expression would read tiles::(...)), and a reference bound at load time crashed Python
                stmts.append(f"inline decltype(auto) __emu_shared_{name}() {{ return {expr}; }}")
                prelude.append(f"#define {name} __emu_shared_{name}()")
            elif file_scope:
                prelude.append(f"#define {name} {expr}")
            else:
                stmts.append(decl)
        original = src[start:end + ends_with_semicolon]
        newlines = original.count("\n") - type_def.count("\n")
        tail = (" \\\n" if "\\\n" in original else "\n") * newlines
        out.append(src[last:start])
        out.append(type_def + " ".join(stmts) + tail)
        last = end + ends_with_semicolon
    out.append(src[last:])
    return _Rewritten("".join(out), "\n".join(prelude), _find_kernels(masked), shared_names=tuple(shared_names))


# ------------------------------------------------------------------------------------------------
# Building: g++ into a content-addressed cache, written atomically (temp file + rename).
# ------------------------------------------------------------------------------------------------
# -fno-isolate-erroneous-paths-dereference: g++ would replace a division by a constant zero (or a null
# dereference it can prove) by a trap instruction with no source line; kept, it faults at the user's line.
# -fno-ipa-icf: g++ would fold kernels with the same body into one, so a crash in the second would be named at
# the first one's lines.
_COMMON_FLAGS = ["-std=c++17", "-fPIC", "-fno-strict-aliasing", "-fvisibility=hidden",
                 "-fno-isolate-erroneous-paths-dereference", "-fno-ipa-icf", "-Wno-unknown-pragmas",
                 "-Wno-attributes"]
# -g1 (line tables only): a crash's faulting instruction maps back to a source line through addr2line.
# -fstack-clash-protection: a big local array touches its stack pages in order, so it hits the guard
# page below the fiber's stack (a KernelFault) rather than jumping over it into another thread's stack.
_VARIANT_FLAGS = {
    # CUDA kernels often pun types (float4 loads from a float*), hence -fno-strict-aliasing.
    "fast": ["-O2", "-g1", "-fstack-clash-protection"],
    # memcheck=True (or $MINILORA_EMU_MEMCHECK=1): the fast build with every load checked against the fences'
    # shadow (_fence_checks); it links the fast build's runtime
    "memcheck": ["-O2", "-g1", "-fstack-clash-protection"],
    # the portable fiber switch, for non-x86-64 hosts
    "ucontext": ["-O2", "-g1", "-fstack-clash-protection", "-DEMU_FORCE_UCONTEXT"],
    # -gdwarf-4: with DWARF 5 binutils' addr2line names wrapper.cpp instead of the #line file here
    "asan": ["-O1", "-g", "-gdwarf-4", "-fno-omit-frame-pointer", "-fsanitize=address,bounds,shift-exponent,float-cast-overflow,alignment",
             "-fno-sanitize-recover=all"],
    # racecheck=True: the kernel's loads and stores call runtime.cpp's hazard detector (see _build).
    "racecheck": ["-O1", "-g1", "-DEMU_RACECHECK"],
    # A source that uses volatile (outside asm): its volatile loads and stores take turns across the
    # lanes of a warp, as in a GPU warp's lockstep (runtime.cpp, "lockstep").
    "lockstep": ["-O2", "-g1", "-fstack-clash-protection", "-DEMU_LOCKSTEP"],
}
# Compiled into the kernel only (not the runtime, not the link): undefined behaviour a GPU and the CPU resolve
# differently, so that it stops the launch instead of silently giving the CPU's answer -- a shift by the
# type's width or more (the GPU's shl clamps the count, x86 masks it: x << 32 is 0 there and x here) and a
# float -> int conversion of NaN or of a value out of range (the GPU saturates, x86 gives INT_MIN) -- and a
# misaligned access (a float4 load from x + 1: the GPU stops with "misaligned address", x86 just loads it).
# runtime.cpp implements the __ubsan_handle_* hooks; the sanitizer build uses libubsan's.
# And an index past an array of known size (a thread's local array: a GPU overwrites its other variables silently),
# except an inner dimension's (minilora/emulator_subscripts.py).  -fpeel-loops: with a check in its body, -O2 no
# longer unrolls a `for (i = 0; i < 4; ++i)` over a register tile (the check counts as code growth), which then
# stays in memory: a register-tiled SGEMM ran 4-6x slower; peeled, the checks of constant indices fold away.
_UB_CHECKS = ["-fsanitize=shift-exponent,float-cast-overflow,alignment,bounds", "-fpeel-loops"]
# For the kernel's file only.  -fno-exceptions: throw/try in device code is a compile error at the user's line,
# as nvcc's (a throw ended the launch in abort(), with no line).  -fno-optimize-sibling-calls: a call the
# runtime names by its return address (a kernel's last `free(p)`, a double free) keeps the kernel's line there
# (as a tail call it returned into the runtime's fiber loop).
# -fcheck-new: device code's `new` answers NULL when the device heap is full (runtime.cpp), as a GPU's, so a
# constructor must not run on it and the kernel's own `if (p)` must stay.
_KERNEL_FLAGS = ["-fno-exceptions", "-fno-optimize-sibling-calls", "-fcheck-new"]
# Compiled into the kernel only (not the runtime, not the link): GCC's thread-sanitizer instrumentation,
# whose __tsan_read/__tsan_write hooks runtime.cpp implements itself; libtsan is never linked.
_RACECHECK_INSTRUMENT = ["-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0"]
_LOCKSTEP_INSTRUMENT = _RACECHECK_INSTRUMENT + ["--param=tsan-distinguish-volatile=1"]


def _fence_checks() -> list[str]:
    """Compiled into the kernel (and its precompiled header) of the memcheck build: GCC's kernel-address
    instrumentation of the loads, inline, against emulator_fence.py's shadow (no ASan runtime: the stack and
    globals left alone; runtime.cpp's __asan_report_* take the rare hit), so a read of the mapped bytes next to a
    fenced argument array (before its start, or the < 16 bytes after an odd-sized one) is a KernelFault at its
    line.  Stores are left out (+13% compile time for loads, +30% with stores): a write there is found after the
    launch, in the pattern those bytes hold.  Opt-in, as compute-sanitizer is (memcheck=True): the checks made
    kernels 1.4-4.3x slower (register-tiled SGEMMs the most: the branch after every load keeps GCC from
    vectorizing their outer products), and the fast build's guard pages already name every access 16 bytes or
    more past an array and every write next to one.  None where the shadow could not be reserved (then those
    bytes are read unnoticed)."""
    if fence_shadow() is None:
        return []
    return ["-fsanitize=kernel-address", f"-fasan-shadow-offset={fence_shadow():#x}",
            "--param=asan-instrumentation-with-call-threshold=1000000", "--param=asan-stack=0",
            "--param=asan-globals=0", "--param=asan-instrument-writes=0"]


def _instrumentation(variant: str) -> list[str]:
    """The instrumentation compiled into a (non-sanitizer) build's kernel and precompiled header."""
    return _UB_CHECKS + {"racecheck": _RACECHECK_INSTRUMENT, "lockstep": _LOCKSTEP_INSTRUMENT,
                         "memcheck": _fence_checks()}.get(variant, [])


def _uses_volatile(masked: str) -> bool:
    """Whether kernel code (comments and strings blanked) declares something volatile; `asm volatile` aside."""
    return re.search(r"\bvolatile\b", re.sub(r"\b(?:asm|__asm__|__asm)\s+(?:volatile|__volatile__)", "", masked)) is not None
_IGNORED_OPTIONS = ("-lineinfo", "--generate-line-info", "-G",
                    "--device-debug", "-restrict", "--restrict", "-dopt", "-dlto", "-rdc", "--relocatable",
                    # NVRTC's and nvcc's options that change no value a kernel computes: which lambdas and
                    # constexpr calls compile (g++ takes both as they are), diagnostics, what code is generated
                    "--extended-lambda", "-extended-lambda", "--expt-extended-lambda", "-expt-extended-lambda",
                    "--expt-relaxed-constexpr", "-expt-relaxed-constexpr", "--device-int128", "-device-int128",
                    "--extra-device-vectorization", "-extra-device-vectorization", "--extensible-whole-program",
                    "-ewp", "--device-as-default-execution-space", "-err-no", "--display-error-number",
                    "-no-err-no", "--no-display-error-number",
                    # NVRTC's (CUDA 12.x) others of the kind: whole-program or separate compilation, link-time
                    # optimization, what the front end declares (--minimal: no texture or runtime functions),
                    # precompiled headers and compile-time reports
                    "--device-c", "-dc", "--device-w", "-dw", "--dlink-time-opt", "--gen-opt-lto", "-gen-opt-lto",
                    "--no-source-include", "-no-source-include", "--minimal", "-minimal", "--pch", "-pch")
# -prec-div=false, -prec-sqrt=false and -fmad=true change the last bits of `/`, sqrtf and a*b+c on a GPU: g++ keeps
# them IEEE-exact and unfused here (kernels/README.md, "Rounding details"); what the emulator models of fast math
# is _FAST_MATH below.
_IGNORED_PREFIXES = ("-arch", "--gpu-architecture", "-code", "--gpu-code", "-maxrregcount", "--maxrregcount",
                     "-prec-div", "--prec-div", "-prec-sqrt", "--prec-sqrt", "-fmad", "--fmad",
                     "-Xptxas", "--ptxas-options", "-default-device", "--default-device", "-rdc=",
                     "--relocatable-device-code", "--dopt", "--modify-stack-limit", "-modify-stack-limit",
                     "--diag-suppress", "-diag-suppress", "--diag-warn", "-diag-warn", "--diag-error", "-diag-error",
                     "--brief-diagnostics", "-brief-diag", "--split-compile", "-split-compile",
                     "--optimization-info=", "-opt-info=", "--jump-table-density=", "-jtd=",
                     "--device-stack-protector=", "-device-stack-protector=", "--builtin-move-forward=",
                     "-builtin-move-forward=", "--builtin-initializer-list=", "-builtin-initializer-list=",
                     "--time=", "-time=", "--fdevice-time-trace=", "-fdevice-time-trace=", "--Ofast-compile=",
                     "-Ofc=", "--create-pch=", "-create-pch=", "--use-pch=", "-use-pch=", "--pch-dir=", "-pch-dir=",
                     "--pch-verbose=", "-pch-verbose=", "--pch-messages=", "-pch-messages=",
                     "--instantiate-templates-in-pch=", "-instantiate-templates-in-pch=")
# NVRTC's long spellings of the options g++ shares: --define-macro=N=4 is -DN=4
_LONG_SPELLINGS = {"--define-macro": "-D", "--undefine-macro": "-U", "--include-path": "-I",
                   "--pre-include": "-include"}
_FAST_MATH_OPTIONS = ("--use_fast_math", "-use_fast_math")
# With -use_fast_math nvcc compiles these single-precision functions as their intrinsics (expf as __expf: PTX
# ex2.approx of a rounded product).  The link step redirects every call the kernel's code makes to them, std::exp of
# a float included, to cuda_emu.h's __wrap_* (the intrinsic); tanf too, whose intrinsic is the fast divide of the
# other two.  sinf, cosf, sincosf, log2f and tanhf map to intrinsics too, but the emulator's are the accurate functions
# (within the GPU's error), so calls to them are kept.
_FAST_MATH = ("expf", "exp10f", "logf", "log10f", "powf", "tanf")
_FAST_MATH_LINK_FLAGS = [f"-Wl,--wrap={name}" for name in _FAST_MATH]
_FAST_MATH_MACRO, _FLUSH_DENORMALS_MACRO = "-D__EMU_FAST_MATH=1", "-D__EMU_FTZ=1"
_X86_64 = ("x86_64", "amd64")
# runtime.cpp's FlushDenormals and _keep_double_subnormals: per-type flushing is x86-64's (ARM's FPCR.FZ would flush
# doubles too, with nothing in the build to keep them)
_FLUSHING_MACHINES = _X86_64
# -Bsymbolic-functions: the library's calls of its own functions stay its own.  -fvisibility=hidden does not hide
# a function GCC knows as a builtin (an `extern "C" __global__ void conj(...)`, cabs, cexp, creal, ...: C99's
# complex functions, which C++ headers do not declare, so _names_taken_by_headers cannot see them): it was
# exported, and its launch called libm's conj instead -- the kernel never ran, its outputs silently unwritten.
_LIBRARY_LINK_FLAGS = ["-shared", "-Wl,-Bsymbolic-functions"]
# exit() and abort() in device code end the launch, not Python (see runtime.cpp).
_LINK_FLAGS = ["-Wl,--wrap=exit", "-Wl,--wrap=_exit", "-Wl,--wrap=_Exit", "-Wl,--wrap=quick_exit",
               "-Wl,--wrap=abort"]
# The device heap: malloc, free and new / delete (mangled: plain, sized, aligned and nothrow), so that runtime.cpp
# names a double free, or a free of what the heap never returned, in device code at its line (compute-sanitizer's
# memcheck) rather than glibc aborting or freeing silently.
_HEAP_LINK_FLAGS = [f"-Wl,--wrap={name}" for name in (
    "malloc", "free", "_Znwm", "_Znam", "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm",
    "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t", "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t")]
_BASE_STACK = 64 * 1024  # per thread, on top of the kernel's own frames (printf, libm, ...)
_MAX_WORKERS = 64  # runtime.cpp's kMaxWorkers
# The runtime starts the other workers only once a launch looks long enough to repay them; tests set
# this to start them with every launch, so that small launches exercise several OS threads too.
_START_WORKERS_AT_ONCE = False
_BUILD_LOCK = threading.Lock()
_LAUNCH_LOCK = threading.Lock()  # the runtime keeps one launch's state in globals
_stack_holder = None  # the module whose runtime last launched: it keeps its fibers' stacks for the next one


def _hold_stacks(module):
    """Before ``module`` launches (under _LAUNCH_LOCK): the module that launched last gives its fiber stacks
    back. Each module keeps a pool for reuse, two memory mappings per thread slot; a test session loads
    hundreds of modules, and pools kept by all of them exhausted the process's mappings."""
    global _stack_holder
    if _stack_holder is not None and _stack_holder is not module:
        _stack_holder.lib.emu_release_stacks()
    _stack_holder = module
_compiler_id_cache: list[str] = []


_DEFAULT_ARCH = 90  # sm_90 (Hopper): the newest architecture the project targets


def _arch_of(options) -> int:
    """The architecture the options compile for, as 10 * major + minor (sm_90 -> 90)."""
    return int(_translate_options(options)[0].split("=")[1]) // 10


def _short_spelling(opt: str) -> str:
    """-D, -U, -I, -include for NVRTC's --define-macro=, --undefine-macro=, --include-path=, --pre-include=."""
    name, sep, value = opt.partition("=")
    short = _LONG_SPELLINGS.get(name)
    if short is None:
        return opt
    return f"-include={value}" if short == "-include" else short + value if sep else short


def _translate_options(options) -> list[str]:
    """Map CuPy/NVRTC options onto g++: -D/-U/-I/-std pass through, GPU-only ones are ignored, and
    __CUDA_ARCH__ is defined as nvcc defines it in device code (from -arch=sm_XY, default sm_90)."""
    if isinstance(options, str):
        options = (options,)
    arch, out, it = _DEFAULT_ARCH, [], iter(options)
    fast_math, ftz = False, None  # ftz: as given (-ftz=true/false), else what --use_fast_math implies
    for opt in it:
        if not isinstance(opt, str):
            raise TypeError(f"options must be strings, got {opt!r}")
        opt = _short_spelling(opt)
        m = re.fullmatch(r"(?:-arch|--gpu-architecture)[= ]?(?:sm|compute)_(\d+)a?", opt)
        if m:
            arch = int(m.group(1))
            continue
        if opt in ("-arch", "--gpu-architecture"):
            value = next(it, "")
            m = re.fullmatch(r"(?:sm|compute)_(\d+)a?", value)
            if not m:
                raise ValueError(f"unsupported architecture {value!r} (expected e.g. sm_80)")
            arch = int(m.group(1))
            continue
        if opt in ("-D", "-U", "-I", "-include"):
            out += [opt, next(it, "")]
        elif opt.startswith("-include="):
            out += ["-include", opt.split("=", 1)[1]]
        elif opt.startswith(("-D", "-U", "-I")):
            out.append(opt)
        elif opt in ("-w", "--disable-warnings"):
            out.append("-w")
        elif opt.startswith(("-std=", "--std=")):
            std = opt.split("=", 1)[1]
            out.append("-std=" + (std if std in ("c++17", "c++20", "gnu++17", "gnu++20") else "c++17"))
        elif opt in _FAST_MATH_OPTIONS:  # nvcc: --use_fast_math implies --ftz=true (and the rest, above)
            fast_math, ftz = True, True if ftz is None else ftz
        elif re.fullmatch(r"--?ftz(?:=| |$).*", opt):
            value = opt.split("=", 1)[1] if "=" in opt else next(it, "")
            if value not in ("true", "false"):
                raise ValueError(f"option {opt!r}: -ftz takes true or false, got {value!r}")
            ftz = value == "true"
        elif opt in ("-Xptxas", "--ptxas-options", "-maxrregcount", "--maxrregcount", "-code", "--gpu-code"):
            next(it, "")  # the value, a separate argument: ptxas's, not g++'s
        elif opt in _IGNORED_OPTIONS or opt.startswith(_IGNORED_PREFIXES):
            continue
        else:
            raise ValueError(f"unsupported compile option {opt!r} (the emulator understands -D, -U, -I, -std=, "
                             "--use_fast_math, -ftz= and ignores GPU-only options such as -arch)")
    if ftz and platform.machine().lower() not in _FLUSHING_MACHINES:
        raise ValueError(f"-ftz=true (implied by --use_fast_math): the emulator flushes float subnormals (and keeps "
                         f"double ones) through SSE's control register on x86-64 only, not on {platform.machine()!r}; pass "
                         "-ftz=false to run with subnormals kept")
    modes = [_FAST_MATH_MACRO] * fast_math + [_FLUSH_DENORMALS_MACRO] * bool(ftz)
    return [f"-D__CUDA_ARCH__={arch * 10}"] + modes + out


_DIVISION = re.compile(r"(?<![/*])/(=?)(?![/*])")
_LAUNCH_BOUNDS = re.compile(r"\b(?:__launch_bounds__|__cluster_dims__)\s*\(")


def _macros_in_conditions(masked: str) -> set[str]:
    """The names #if / #elif conditions read, and the names in the bodies of those macros, and so on."""
    conditions = re.findall(r"^[ \t]*#[ \t]*(?:if|elif)\b((?:[^\n]*\\\n)*[^\n]*)", masked, re.M)
    names = set(re.findall(r"[A-Za-z_]\w*", " ".join(conditions)))
    bodies = dict(re.findall(r"^[ \t]*#[ \t]*define[ \t]+(\w+)((?:[^\n]*\\\n)*[^\n]*)", masked, re.M))
    pending = list(names)
    while pending:
        for name in re.findall(r"[A-Za-z_]\w*", bodies.get(pending.pop(), "")):
            if name not in names:
                names.add(name)
                pending.append(name)
    return names


def _fast_division(src: str) -> str:
    """--use_fast_math: the source's `x / y` becomes `x / __emu::fast_div() / y` and `x /= y` becomes
    `x /= __emu::fast_div() = y` (same precedence, same lines), which cuda_emu.h computes as __fdividef when the
    quotient is a float and as the plain `/` otherwise -- nvcc compiles a float `x/y` as `__fdividef(x,y)` under the
    flag, and only the compiler knows the operands' types.  Left alone: comments and strings, `operator/`,
    preprocessor conditions and includes (a #define's body is rewritten where it is used), __launch_bounds__ and
    __cluster_dims__."""
    masked = _mask(src)
    skipped = [(m.start(), _close_paren(masked, m.end() - 1)) for m in _LAUNCH_BOUNDS.finditer(masked)]
    in_conditions = _macros_in_conditions(masked)
    out, last = [], 0
    for m in _DIVISION.finditer(masked):
        pos = m.start()
        directive = masked[_logical_line_start(masked, pos):pos].lstrip()
        define = re.match(r"#\s*define\s+(\w+)", directive)
        if directive.startswith("#") and (not define or define.group(1) in in_conditions):
            continue  # (a macro an #if reads must stay arithmetic the preprocessor can evaluate)
        if re.search(r"\boperator\s*$", masked[max(0, pos - 40):pos]) or any(a < pos < b for a, b in skipped):
            continue
        out += [src[last:m.end()], " __emu::fast_div() =" if m.group(1) else " __emu::fast_div() /"]
        last = m.end()
    return "".join(out + [src[last:]])


# nvcc and NVRTC warn "'long double' is treated as 'double' in device code" and compute in double; g++ on x86
# would compute in the 80-bit x87 format (1.0L + 1e-17L - 1.0L is 1e-17 there, 0 on a GPU).  So the source's
# `long double` becomes `double` and a floating literal's L suffix goes (same lengths: lines and columns stay);
# device printf reads %Lf as %f (runtime.cpp, without_long_double_modifier).
_LONG_DOUBLE = re.compile(r"\blong([ \t]+)double\b")
_LONG_DOUBLE_LITERAL = re.compile(
    r"(?<![\w.])(?:0[xX](?:[0-9a-fA-F]*\.)?[0-9a-fA-F]+[pP][+-]?\d+|(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?"
    r"|\d+[eE][+-]?\d+)([lL])\b")


def _long_double_as_double(src: str) -> str:
    masked, text = _mask(src), list(src)
    for m in _LONG_DOUBLE.finditer(masked):  # `long` and the blanks after it become blanks: "     double"
        text[m.start():m.end(1)] = " " * (m.end(1) - m.start())
    for m in _LONG_DOUBLE_LITERAL.finditer(masked):
        text[m.start(1)] = " "
    return "".join(text)


# -ftz=true flushes float subnormals only (PTX's .ftz exists for .f32 and .f16; a GPU's doubles keep theirs), but
# SSE's FTZ and DAZ, which runtime.cpp sets while blocks run, flush doubles too.  So the kernel of an -ftz build is
# compiled to assembly, and each instruction whose operands and result are doubles (the scalar and packed `sd` / `pd`
# arithmetic, compares, FMAs), and each call of a libm double function, runs between `ldmxcsr emu_csr_kept` (FTZ and
# DAZ clear) and `ldmxcsr emu_csr_flushing` (runtime.cpp).  Conversions stay flushed: a float argument of
# cvtss2sd is read as a GPU's cvt.ftz.f64.f32 reads it, a float result of cvtsd2ss is written as cvt.rn.ftz.f32.f64.
_DOUBLE_INSTRUCTION = re.compile(
    r"\s+v?(?:(?:add|sub|mul|div|sqrt|min|max|hadd|hsub|addsub|round)(?:sd|pd)|u?comisd|cmp\w*(?:sd|pd)|dppd"
    r"|vf(?:n?m(?:add|sub)|maddsub|msubadd)\d{3}(?:sd|pd)|vrange(?:sd|pd)|vreduce(?:sd|pd)|vgetexp(?:sd|pd)"
    r"|vgetmant(?:sd|pd)|vscalef(?:sd|pd)|vrndscale(?:sd|pd)|v?cvtsi2sd[lq]?)\s")
_LIBM_DOUBLE = ("exp", "exp2", "exp10", "expm1", "log", "log2", "log10", "log1p", "logb", "ilogb", "pow", "sqrt",
                "cbrt", "hypot", "sin", "cos", "tan", "sincos", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh",
                "asinh", "acosh", "atanh", "erf", "erfc", "lgamma", "lgamma_r", "tgamma", "j0", "j1", "jn", "y0", "y1",
                "yn", "fma", "fmod", "remainder", "remquo", "ldexp", "scalbn", "scalbln", "frexp", "modf", "nextafter",
                "nexttoward", "floor", "ceil", "trunc", "round", "rint", "nearbyint", "lrint", "llrint", "lround",
                "llround", "fdim", "fmax", "fmin")
_LIBM_DOUBLE_CALL = re.compile(rf"\s+call\s+(?:{'|'.join(_LIBM_DOUBLE)})(?:@PLT)?\s*$")
# rounded_as sets its own rounding mode and clears FTZ and DAZ itself (cuda_emu.h): the plain ldmxcsr would undo it
_OWN_CSR_FUNCTION = re.compile(r"rounded_as|__d(?:add|sub|mul|div|rcp|sqrt)_r[zdu]|__fma_r[zdu]")
# inline PTX's f32 instructions without .ftz (minilora_ptx.h): the whole function runs with subnormals kept
_KEEPING_FUNCTION = re.compile(r"keep_subnormals")


# What a kept stretch may run across (SSE's FTZ and DAZ change none of them): assembler directives, integer and
# memory instructions.  A label, jump, call or return ends it (code elsewhere runs flushing), and so does any other
# floating-point instruction (a float's: ss / ps / sh / ph, a conversion, a move of either: kept out to be safe).
_NEUTRAL_LINE = re.compile(r"\s+(?:\.(?:loc|cfi_\w+)\b|(?!j|call|ret|cvt|vcvt)[a-z]\w*(?<!ss)(?<!ps)(?<!sh)(?<!ph)\s)")


def _keep_double_subnormals(assembly: str) -> str:
    """The -ftz build's assembly with its double arithmetic run as a GPU's, subnormals kept (see above): each
    stretch of double instructions (with only neutral ones between) in one `ldmxcsr emu_csr_kept` ... `ldmxcsr
    emu_csr_flushing` window."""
    out, skipping, keeping, kept = [".hidden emu_csr_kept", ".hidden emu_csr_flushing"], False, False, False
    for line in assembly.splitlines():
        function = re.match(r"\s+\.type\s+([^,]+),\s*@function", line)
        if function:
            skipping = _OWN_CSR_FUNCTION.search(function.group(1)) is not None
            keeping = _KEEPING_FUNCTION.search(function.group(1)) is not None
        if keeping:
            if re.match(r"\s+ret\b", line):
                out.append("\tldmxcsr emu_csr_flushing(%rip)")
            out.append(line)
            if re.match(r"\s+\.cfi_startproc\b", line):
                out.append("\tldmxcsr emu_csr_kept(%rip)")
            continue
        double = not skipping and (_DOUBLE_INSTRUCTION.match(line + " ") or _LIBM_DOUBLE_CALL.match(line))
        if kept and not double and not _NEUTRAL_LINE.match(line + " "):
            out.append("\tldmxcsr emu_csr_flushing(%rip)")
            kept = False
        if double and not kept:
            out.append("\tldmxcsr emu_csr_kept(%rip)")
            kept = True
        out.append(line)
        if kept and _LIBM_DOUBLE_CALL.match(line):  # (a call ends the stretch: what follows may be a label's)
            out.append("\tldmxcsr emu_csr_flushing(%rip)")
            kept = False
    return "\n".join(out) + "\n"


def _compiler_id() -> str:
    if not _compiler_id_cache:
        try:
            res = subprocess.run([_CXX, "--version"], capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise CompileError(f"the CUDA emulator needs a C++ compiler ({_CXX}): {e}") from None
        _compiler_id_cache.append(res.stdout.splitlines()[0] if res.stdout else _CXX)
    return _compiler_id_cache[0]


def _write_atomic(path: Path, data: str) -> None:
    if path.is_file() and path.read_text() == data:
        return
    remove_leftovers(path)  # (a killed write's; its name carries the writer's pid for that)
    write_atomically(path, data)


# CUDA libraries beyond the core headers (kernels/emu/include has stand-ins for those): not emulated.
_CUDA_LIBRARIES = {"curand": "cuRAND (device random numbers: draw them on the host with NumPy and pass them in)",
                   "cub/": "CUB beyond the emulator's <cub/cub.cuh> stand-in (its block and warp collectives: "
                           "BlockReduce, BlockScan, BlockLoad/Store/Exchange, BlockRadixSort, BlockMergeSort, "
                           "BlockHistogram, BlockDiscontinuity, BlockAdjacentDifference, BlockShuffle, "
                           "BlockRunLengthDecode, WarpReduce, WarpScan, WarpLoad/Store/Exchange, WarpMergeSort)",
                   "thrust/": "Thrust (beyond the emulator's <thrust/complex.h> stand-in)",
                   "cupy/": "CuPy's headers beyond the emulator's <cupy/math_constants.h>, <cupy/carray.cuh> "
                            "(its float16) and <cupy/complex.cuh> stand-ins",
                   "cuda/std/": "libcu++ beyond the emulator's <cuda/std/...> stand-ins ({})",
                   "cuda/": "libcu++ (cuda::annotated_ptr, cuda::ptx, cuda::memory_resource, ...; of libcu++ the emulator has "
                            "<cuda/std/...>, <cuda/atomic>'s atomic_ref, <cuda/barrier>, <cuda/pipeline> and <cuda/cmath>'s "
                            "ceil_div, round_up, round_down only)",
                   "cublas": "cuBLAS", "cufft": "cuFFT", "cusparse": "cuSPARSE", "cudnn": "cuDNN",
                   "cuda_pipeline": "cuda_pipeline.h",
                   "cuda_fp6": "the FP6 types", "cuda_fp4": "the FP4 types", "cuda_awbarrier": "cuda_awbarrier.h",
                   "cutlass/": "CUTLASS", "cute/": "CuTe (CUTLASS 3)", "cusolver": "cuSOLVER", "nccl": "NCCL",
                   "nvtx3/": "NVTX", "nvToolsExt": "NVTX",
                   "torch/": "PyTorch's C++ extension API (host code: bind the kernel from Python instead)",
                   "ATen/": "PyTorch's C++ API (ATen)", "c10/": "PyTorch's C++ API (c10)",
                   "pybind11/": "pybind11 (host code: the emulator's kernels are called from Python directly)"}


def _missing_header_hint(stderr: str) -> str:
    """A line naming the CUDA library behind a header g++ could not find, if it is one."""
    m = re.search(r"fatal error: (\S+): No such file or directory", stderr)
    if not m:
        return ""
    library = next((v for k, v in _CUDA_LIBRARIES.items() if m.group(1).startswith(k)), None)
    if library is None:
        return ""
    library = library.format(", ".join(sorted(p.name for p in (_INCLUDE / "cuda" / "std").iterdir()
                                              if not p.name.startswith("__"))))
    return (f"\n{m.group(1)} belongs to {library}, which minilora's CUDA emulator does not provide: it has CUDA's "
            "core headers only (cuda_runtime.h, cuda_fp16.h, cuda_bf16.h, cooperative_groups.h, cuComplex.h, "
            "cuda/std/..., cuda/atomic, cuda/barrier, cuda/pipeline, cuda/cmath, cuda_pipeline.h, cub/cub.cuh, mma.h)")


# A line marker of g++'s preprocessed output (`# 12 "kernel.cu" 2`): the lines after it are that file's, from 12 on.
# Found after its newline (the first line aside): re jumps from one "\n# " to the next, where a ^ made it try every
# character (27 ms -> 0.5 ms on a ~0.8 MB source).
_LINE_MARKER = re.compile(r'\n# (\d+) "([^"]*)"[^\n]*')
_FIRST_LINE_MARKER = re.compile(r'# (\d+) "([^"]*)"[^\n]*')


def _line_markers(preprocessed: str):
    """(start, end, line number, file) of each line marker, in order (end: before the line's newline)."""
    first = _FIRST_LINE_MARKER.match(preprocessed)
    if first:
        yield 0, first.end(), int(first.group(1)), first.group(2)
    for marker in _LINE_MARKER.finditer(preprocessed):
        yield marker.start() + 1, marker.end(), int(marker.group(1)), marker.group(2)


def _file_spans(preprocessed: str):
    """(file, number of its first line, start, end) of each run of lines between `# LINE "file"` markers of a
    preprocessed source (end: before the run's last newline; runs of no lines left out), in order.  One regex pass
    over the markers: the lines of the headers (most of the text) are never visited one by one."""
    current, line, start = "", 0, 0
    for marker_start, marker_end, number, file in _line_markers(preprocessed):
        if marker_start > start:
            yield current, line, start, marker_start - 1
        current, line, start = file, number, marker_end + 1
        if marker_end == len(preprocessed):  # the last line of the text is a marker: no lines follow
            return
    yield current, line, start, len(preprocessed)


def _user_code_with_offsets(preprocessed: str, masked: str):
    """(file, line number, masked text, offset of the line in `masked`) of each line of a preprocessed source that
    comes from the user's files (masked: the same text with comments and strings blanked, line for line)."""
    for file, line, start, end in _file_spans(preprocessed):
        if _is_user_file(file):
            for text in masked[start:end].split("\n"):
                yield file, line, text, start
                line, start = line + 1, start + len(text) + 1


def _brace_positions(masked: str) -> list[int]:
    """Offsets of every { and } of a masked source, for _enclosing_function's walks: found once per source (the
    last one is kept, with its source: one tuple, read and replaced whole, as builds may run on several threads),
    not once per walk."""
    global _braces_seen
    seen = _braces_seen
    if seen[0] is not masked:
        seen = _braces_seen = (masked, [m.start() for m in _BRACKETS["{"].finditer(masked)])
    return seen[1]


_braces_seen: tuple = (None, [])


def _enclosing_function(masked: str, pos: int) -> tuple[str, bool]:
    """(name, whether it is device code) of the function whose body holds `pos` in a masked source; ("", False)
    at file scope.  Blocks of if/for/while, lambdas and class bodies on the way out are stepped over."""
    depth, braces = 0, _brace_positions(masked)
    for k in range(bisect.bisect_left(braces, pos) - 1, -1, -1):  # the braces before pos, nearest first
        i = braces[k]
        ch = masked[i]
        if ch == "}":
            depth += 1
        elif ch == "{" and depth:
            depth -= 1
        elif ch == "{":
            header = masked[max(masked.rfind(c, 0, i) for c in ";{}") + 1:i].strip()
            if re.match(r"(?:if|for|while|switch|do|else|try|catch)\b", header) or re.search(r"\]\s*(?:\([^()]*\))?[^()]*$", header):
                continue  # a statement's block or a lambda: look further out
            call = re.search(r"([A-Za-z_~][\w:]*)\s*\(", re.sub(r"(?:__launch_bounds__|__cluster_dims__|__maxnreg__)\s*\([^()]*\)", "", header))
            if call is None or re.match(r"(?:namespace|struct|class|union|enum)\b", header) or \
                    re.fullmatch(r'extern\s*"\s*"', header):
                return "", False
            return call.group(1), re.search(r"\b(?:__global__|__device__)\b", header) is not None
    return "", False


def _is_user_file(file: str) -> bool:
    """Not the emulator's stand-in headers nor the system's (nor the compiler's <built-in>)."""
    return bool(file) and not file.startswith((str(EMU_DIR), "/usr/", "<"))


def _names_taken_by_headers(preprocessed: str, masked: str, names) -> set[str]:
    """Which of `names` the headers under the kernel (the C and C++ libraries, the emulator's own) also declare:
    a kernel called abs, exp or copy would clash with them on the CPU, where nvcc's device code has no libc."""
    library = "\n".join(masked[start:end] for file, _, start, end in _file_spans(preprocessed) if not _is_user_file(file))
    return {name for name in names if _declares(library, name)}


# A declaration: `extern double exp (double __x) ...`, `extern long timezone;` (glibc), `using std::abs;` (libstdc++'s
# <math.h>) or an inline function (the emulator's min, max, atomicAdd, ...).  A mere mention (a parameter called k)
# is no clash.  As one regex, (?:\b(?:extern|inline)\b[^;{}()=]*?[\s*&]|\busing\s+(?:std\s*)?::\s*)NAME\s*[(;]
# tried every character of the headers (~45 ms a name); here each `NAME (` is found first, and what precedes it
# checked: `extern` or `inline` since the last ; { } ( ) = and a blank, * or & just before the name, or `using ::`.
_EXTERN_OR_INLINE = re.compile(r"\b(?:extern|inline)\b")
_USING = re.compile(r"\busing\s+(?:std\s*)?::\s*$")
_BEFORE_A_DECLARED_NAME = re.compile(r"[\s*&]")


def _declares(library: str, name: str) -> bool:
    """Whether the headers' text `library` declares `name` (see above)."""
    for m in re.finditer(re.escape(name) + r"\s*[(;]", library):
        at = m.start()
        since = max(library.rfind(c, 0, at) for c in ";{}()=") + 1  # the declaration's start, at the latest
        if _USING.search(library, since, at):
            return True
        if at and _BEFORE_A_DECLARED_NAME.match(library, at - 1) and _EXTERN_OR_INLINE.search(library, since, at - 1):
            return True
    return False


_RENAMED_KERNEL = "__emu_kernel_"  # prefix of a kernel renamed away from a library name


def _rename_kernels(text: str, names: set[str]) -> str:
    """Give each __global__ function called one of `names` the name _RENAMED_KERNEL + name (at its
    declarations and definition; a kernel is never called from device code)."""
    if not names:
        return text
    masked, edits = _mask(text), []
    for m in _words(r"__global__\b", masked):
        j = m.end()
        while True:
            mm = re.compile(r"([A-Za-z_]\w*)\s*[(<]").search(masked, j)
            if mm is None or mm.group(1) not in _KERNEL_ATTRIBUTES:
                break
            j = _close_paren(masked, mm.end() - 1) + 1
        if mm is not None and mm.group(1) in names:
            edits.append(mm.start(1))
    for pos in reversed(edits):
        text = text[:pos] + _RENAMED_KERNEL + text[pos:]
    return text


# The CUDA runtime's host API by its families (cudaMalloc*, cudaMemcpy*, cudaLaunch*: cudaLaunchKernel,
# cudaLaunchCooperativeKernel, ...; cudaStream*, cudaEvent*, cudaGet*/cudaSet*, cudaOccupancy*, ...): none of it
# exists in device code.  A user's own helper (llm.c's cudaCheck) is not one of these names.
_HOST_API = re.compile(r"\b(cuda(?:Malloc|Memcpy|Memset|Free|Device|GetLastError|PeekAtLastError|Launch|Func|"
                       r"Stream|Event|SetDevice|GetDevice|Occupancy|Host|Graph|Mem|Array|Ipc|Pointer|Profiler|Thread|"
                       r"Create|Destroy|Import|External|Ctx|RuntimeGet|DriverGet|GetError|ChooseDevice|Register|"
                       r"Unregister|Configure|SetupArgument|ProfilerStart)\w*)\s*\(")


def _refuse_unsupported(preprocessed: str, masked: str, ptx_refusals=()) -> None:
    """CUDA features g++ would reject with a baffling message, refused by name: a kernel launch in device
    code (dynamic parallelism), host API calls (cudaMemcpyToSymbol, ...) and inline PTX (asm statements;
    guard them with #ifndef __CUDA_EMU__)."""
    for file, line, text, offset in _user_code_with_offsets(preprocessed, masked):
        where = f"{os.path.basename(file)}:{line}"
        if "<<<" in text:
            function, device = _enclosing_function(masked, offset + text.index("<<<"))
            if not device:
                launched = re.search(r"([A-Za-z_][\w:]*(?:\s*<[^<>;]*>)?)\s*<<<", text)
                name = re.sub(r"\s+", " ", launched.group(1)) if launched else "kernel"
                how = (f"RawModule(..., name_expressions=['{name}']).get_function('{name}')" if "<" in name
                       else f"RawModule(...).get_function('{name}')")
                raise CompileError(f"{where}: a kernel launch <<<...>>> in the host function '{function}': a RawModule "
                                   "source holds device code only (as CuPy's NVRTC compiles it), so minilora's CUDA "
                                   f"emulator runs no host code: launch from Python, {how}(grid, block, args)")
            raise CompileError(f"{where}: a kernel launch <<<...>>> inside device code (CUDA dynamic parallelism) is "
                               "not supported by minilora's CUDA emulator (CuPy would also need -rdc=true and "
                               "cudadevrt): launch the child kernel from the host after the parent returns")
        host = _HOST_API.search(text)
        if host:
            hint = ("allocate and copy with NumPy arrays, and fill a __constant__ or __device__ variable with "
                    "module.get_global('name')[...] = values (CuPy's get_global), the counterpart of cudaMemcpyToSymbol")
            if "Cooperative" in host.group(1):
                hint = ("a cooperative launch (grid.sync()) is RawModule(..., enable_cooperative_groups=True) or "
                        "RawKernel(..., enable_cooperative_groups=True), launched from Python as any kernel")
            raise CompileError(f"{where}: {host.group(1)}() is the CUDA runtime's host API, and a RawModule source holds "
                               f"device code only (as CuPy's NVRTC compiles it): {hint}")
        texture = re.search(r"\b(cudaTextureObject_t|cudaSurfaceObject_t|texture\s*<|surface\s*<|"
                            r"(?:tex|surf)(?:1D|2D|3D|Cubemap)\w*(?=\s*[<(]))", text)
        if texture:
            raise CompileError(f"{where}: {texture.group(1).rstrip('< ')}: textures and surfaces are not supported by "
                               "minilora's CUDA emulator (it has no texture units to filter, clamp or cache): pass the "
                               "array as a plain pointer and index it (tex1Dfetch<float>(t, i) -> p[i]), with __ldg for a "
                               "read-only load")
        refused = re.search(r"\b__emu_ptx_refused\s*<\s*(\d+)\s*>", text)
        if refused:
            raise CompileError(f"{where}: {ptx_refusals[int(refused.group(1))]}")
        if re.search(r"(?<![\w.])(?:asm|__asm__|__asm)\s*(?:volatile|__volatile__)?\s*\(", text):
            raise CompileError(f"{where}: inline PTX (an asm statement) cannot run on the CPU: the emulator compiles "
                               "CUDA C++ only. Use the CUDA intrinsic it stands for (%laneid: threadIdx.x % 32, "
                               "ld.global.nc: __ldg, ...) or keep the asm under #ifndef __CUDA_EMU__ with a plain C++ "
                               "version beside it")


def _refuse_unconfigured_calls(preprocessed: str, masked: str, kernels: dict) -> None:
    """Refuse a __global__ function called as a plain function, as nvcc does ("a __global__ function call must be
    configured"): g++ would compile an ordinary call, and the child kernel would run inside the calling thread --
    a kernel that works here and does not build for a GPU.  A call counts when its arguments are as many as the
    kernel's parameters (a kernel named `abs` may call libc's ::abs(x) or abs(x) inside, as in CUDA)."""
    arity = {name.rsplit("::", 1)[-1]: len(params) for name, params in kernels.items()}
    if not arity:
        return
    call = re.compile(r"(?<![\w.>:])(" + "|".join(map(re.escape, sorted(arity))) + r")\s*\(")
    for file, line, text, offset in _user_code_with_offsets(preprocessed, masked):
        for m in call.finditer(text):
            opening = offset + m.end() - 1
            inside = masked[opening + 1:_close_paren(masked, opening)]
            if (len(_split_top(inside)) if inside.strip() else 0) != arity[m.group(1)]:
                continue
            function, _ = _enclosing_function(masked, offset + m.start())
            if function:  # a call in a function's body (the kernel's own header is at file scope)
                raise CompileError(f"{os.path.basename(file)}:{line}: error: a __global__ function call must be "
                                   f"configured: '{function}' calls the kernel '{m.group(1)}' as a function, which "
                                   "nvcc refuses (a kernel is launched, from the host, with <<<grid, block>>>): make "
                                   f"the shared code a __device__ function that both kernels call")


_GLOBAL_OF_A_CLASS = re.compile(r"\b__(device|constant|managed)__\s+(?:(?:const|static|volatile)\s+)*([A-Za-z_]\w*)\s+"
                                r"([A-Za-z_]\w*)\s*[({;=]")


def _refuse_dynamic_initialization(preprocessed: str, masked: str) -> None:
    """Refuse, in nvcc's words, a file-scope __device__ / __constant__ variable of a class none of whose constructors
    is constexpr: nothing runs a constructor for a GPU's globals before a kernel, so nvcc rejects it ("dynamic
    initialization is not supported"), while g++ would run it as the library loads -- a kernel that works here only."""
    depth, pos = 0, 0  # the braces open at pos (counted on from the previous match, as _find_device_globals)
    for file, first_line, start, end in _file_spans(preprocessed):
        if not _is_user_file(file):
            continue
        for m in _GLOBAL_OF_A_CLASS.finditer(masked, start, end):
            depth += masked.count("{", pos, m.start()) - masked.count("}", pos, m.start())
            pos = m.start()
            space, type_name, var = m.groups()
            if depth or (m.group().endswith("(") and not _is_direct_initialization(masked, m.end() - 1)):
                continue  # a member, a local, or a function (`__device__ static T make(...)`)
            found = None if type_name in _NOT_A_NAME else _class_body(masked, type_name)
            if found is None:
                continue
            constructors = re.findall(r"((?:\b(?:constexpr|__device__|__host__|explicit|inline)\s+)*)\b" +
                                      re.escape(type_name) + r"\s*\([^()]*\)\s*(=\s*(?:default|delete))?", found[0])
            if any(not defaulted for _, defaulted in constructors) and \
                    not any("constexpr" in c for c, _ in constructors):
                line = first_line + masked.count("\n", start, m.start())
                raise CompileError(f"{os.path.basename(file)}:{line}: error: dynamic initialization is not supported "
                                   f"for a __{space}__ variable: '{var}' is a {type_name}, whose constructors are not "
                                   "constexpr (nothing runs a constructor for a GPU's global variables): make the "
                                   "constructor constexpr, or give the struct no constructor and write "
                                   f"{type_name} {var} = {{...}}")


def _refuse_non_void_kernels(preprocessed: str, masked: str) -> None:
    """Refuse a __global__ function that returns a value, in nvcc's words ("a __global__ function must have a void
    return type"): g++ failed on the emulator's wrapper instead, in a message about params_of."""
    for file, line, text, offset in _user_code_with_offsets(preprocessed, masked):
        for m in re.finditer(r"\b__global__\b", text):
            start = offset + m.start()
            prev = max(masked.rfind(c, 0, start) for c in ";{}")
            j = offset + m.end()
            while (mm := re.compile(r"([A-Za-z_]\w*)\s*\(").search(masked, j)) is not None and \
                    mm.group(1) in _KERNEL_ATTRIBUTES:
                j = _close_paren(masked, mm.end() - 1) + 1
            if mm is None or text.lstrip().startswith("#"):
                continue
            lines = masked[prev + 1:mm.start()].split("\n")
            declaration = "\n".join(ln for ln in lines if not ln.lstrip().startswith("#"))  # not the line markers
            declaration = re.sub(r'(?:__launch_bounds__|__cluster_dims__)\s*\([^()]*\)|template\s*<.*>|extern\s*"\s*"|\b__global__\b', " ",
                                 declaration, flags=re.S)
            if not re.search(r"\bvoid\b", declaration):
                returned = " ".join(declaration.split())
                raise CompileError(f"{os.path.basename(file)}:{line}: error: a __global__ function must have a void "
                                   f"return type: '{mm.group(1)}' returns {returned or 'a value'} (a kernel writes its "
                                   "results through pointer arguments)")


def _run_compiler(cmd: list[str], output: Path, what: str, before_rename=None) -> str:
    """Run g++ writing to a temporary name, then rename (``native.compile_atomically``): concurrent builds
    never see half a file. ``before_rename(tmp)`` runs first (e.g. to read the -fstack-usage reports).
    Returns g++'s warnings."""
    try:
        return compile_atomically(cmd, output, before_rename)
    except CompileFailed as exc:
        # A kernel renamed away from a C library name (_rename_kernels) shows under the user's name.
        raise CompileError(f"compiling {what} failed:\n{str(exc).replace(_RENAMED_KERNEL, '')}") from None


def _stack_usage(tmp: Path) -> tuple[int, str]:
    """Bytes of stack the kernel file's functions can need together, from g++'s -fstack-usage reports
    (removed after reading).  Their sum bounds every call chain without recursion, so it is a safe
    size for a fiber's stack; a frame marked 'dynamic' (alloca, variable-length arrays) adds 64 KiB.  Also ptxas's
    refusal of a frame over CUDA's local memory limit ("" when none is), which the build keeps beside the product:
    loading it raises the CompileError, so the refusal is as quick as a cached build."""
    total, too_large = 0, []
    # g++ names the report <output>-<source>.su when it links, <output without extension>.su with -c.
    for report in [*tmp.parent.glob(tmp.name + "-*.su"), *tmp.parent.glob(tmp.stem + ".su")]:
        for line in report.read_text(errors="replace").splitlines():
            fields = line.rsplit("\t", 2)
            if len(fields) == 3 and fields[1].isdigit():
                total += int(fields[1]) + (64 * 1024 if "dynamic" in fields[2] else 0)
                if int(fields[1]) > _MAX_LOCAL:
                    too_large.append((fields[0], int(fields[1])))
        report.unlink(missing_ok=True)
    return total, str(_too_much_local_data(*too_large[0])) if too_large else ""


# CUDA's limit on a thread's local memory (its stack frame: local arrays, spills), 512 KiB since compute capability
# 2.0 (the programming guide's "Maximum amount of local memory per thread").  ptxas refuses a kernel past it, so the
# GPU never launches one; the emulator's fibers would have reserved that much per thread (16 GiB for a 16 MiB array
# in a block of 1024) and crashed or slowed to a crawl instead.
_MAX_LOCAL = 0x80000


def _too_much_local_data(where: str, size: int) -> str:
    """ptxas's refusal of a function whose frame (g++'s -fstack-usage report, `file:line:column:signature`) is over
    CUDA's local memory limit, in its words."""
    signature = where.split(":", 3)[-1]
    name = re.sub(r"\(.*", "", signature).split()[-1] if signature.strip() else signature
    location = ":".join(where.split(":", 3)[:2]).rsplit("/", 1)[-1]
    return (f"ptxas error   : Entry function '{name}' uses too much local data (0x{size:x} bytes, "
            f"0x{_MAX_LOCAL:x} max): a thread's local arrays exceed CUDA's 512 KiB of local memory per "
            f"thread (the function at {location}); keep large arrays in global memory (an argument "
            f"array, or malloc in device code) or in __shared__ memory")


def _stand_in_headers() -> list[bytes]:
    """Names and contents of emu/include's headers (cooperative_groups.h, minilora_ptx.h, ...): part of every
    build's key through the runtime's, so that a changed stand-in rebuilds the kernels that include it."""
    return [f"{p.relative_to(_INCLUDE)}\n".encode() + p.read_bytes()
            for p in sorted(_INCLUDE.rglob("*")) if p.is_file()]


def _runtime_object(variant: str) -> Path:
    variant = "fast" if variant == "memcheck" else variant  # the checks are in the kernel, not the runtime
    header, runtime = _HEADER.read_bytes(), _RUNTIME.read_bytes()
    flags = _COMMON_FLAGS + _VARIANT_FLAGS[variant] + (["-DEMU_RUNNER"] if variant == "asan" else [])
    key = _digest(_VERSION, header, runtime, _compiler_id(), *flags, *_stand_in_headers())
    obj = cache_dir() / f"runtime-{variant}-{key}.o"
    if not obj.is_file():
        _make_cache_folder(obj.parent)
        _run_compiler([_CXX, *flags, "-I", str(EMU_DIR), "-c", str(_RUNTIME)], obj, "the emulator runtime")
    return obj


def _precompiled_header(flags: list[str]) -> Path:
    """The header to force-include for a kernel compiled with ``flags``: a precompiled cuda_emu.h, built once per
    cache for each set of flags (parsing the header and the C++ headers behind it was two thirds of compiling a
    small kernel), or cuda_emu.h itself where g++ cannot build one.  The precompiled one is a one-line header
    that includes cuda_emu.h by its own path, beside its .gch: debug line tables still name cuda_emu.h (so a
    fault inside it is attributed to the user's calling line), and where g++ finds the .gch unusable (a -D the
    header tests, from the user's options) it silently reads that line, so the build is the same either way.
    ``flags`` must hold the header's flags only (not the user's -D/-I): those are what g++ checks the .gch
    against, and they key it."""
    key = _digest(_VERSION, _compiler_id(), _HEADER.read_bytes(), *_stand_in_headers(), *flags)
    folder = cache_dir() / f"pch-{key}"
    stub = folder / _HEADER.name
    if key in _PCH_FAILED:
        return _HEADER
    if not (folder / (stub.name + ".gch")).is_file():
        _make_cache_folder(folder)
        _write_atomic(stub, f'#include "{_HEADER}"\n')
        try:
            _run_compiler([_CXX, *flags, "-x", "c++-header", str(stub)], folder / (stub.name + ".gch"),
                          "the emulator's precompiled header")
        except CompileError:
            _PCH_FAILED.add(key)  # not tried again in this process
            return _HEADER
    return stub


_PCH_FAILED: set[str] = set()


def _include_dirs(flags: list[str]) -> list[Path]:
    dirs = [Path(flags[i + 1]) for i, f in enumerate(flags[:-1]) if f == "-I"]
    return dirs + [Path(f[2:]) for f in flags if f.startswith("-I") and len(f) > 2]


_LOCAL_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"[^\n]*$', re.M)
_PRAGMA_ONCE = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+once\b[^\n]*$", re.M)


def _expand_local_includes(code: str, shown_name: str, here: Path | None, dirs: list[Path]) -> str:
    """Paste the project's own headers (`#include "x.cuh"` that resolves to a file) into the source,
    with #line markers, so that __shared__ declared in a header is rewritten like the top file's and
    errors and crash reports still name the header's file and line.  System headers (<...>) and names
    that resolve nowhere are left to the compiler.  `#pragma once` headers are pasted once."""
    once: set[Path] = set()

    def resolve(name: str, folder: Path | None) -> Path | None:
        for d in ([folder] if folder else []) + dirs:
            candidate = (d / name).resolve()
            if candidate.is_file():
                return candidate
        return None

    def expand(text: str, folder: Path | None, shown: str, depth: int) -> str:
        if depth > 64:
            raise CompileError(f"#include nesting deeper than 64 levels in {shown} (a header that includes itself "
                               "without an include guard?)")
        masked, out, last = _mask(text), [], 0
        for m in _LOCAL_INCLUDE.finditer(masked):
            quoted = re.search(r'"([^"\n]+)"', text[m.start():m.end()])
            path = resolve(quoted.group(1), folder) if quoted else None
            if path is None:
                continue
            out.append(text[last:m.start()])
            if path not in once:
                data = path.read_text(errors="replace")
                if _PRAGMA_ONCE.search(_mask(data)):
                    once.add(path)
                    data = _PRAGMA_ONCE.sub("", data)
                out.append(f'#line 1 "{path}"\n' + expand(data, path.parent, str(path), depth + 1) + "\n")
            out.append(f'#line {text.count(chr(10), 0, m.start()) + 2} "{shown}"')
            last = m.end()
        out.append(text[last:])
        return "".join(out)

    return expand(code, here, shown_name, 0)


def _included_files(code: str, flags: list[str]) -> list[bytes]:
    """Contents of the files reached through `#include "..."` (recursively), for the cache key:
    editing a shared header must rebuild every kernel that includes it."""
    dirs = _include_dirs(flags)
    seen, out, todo = set(), [], [code]
    while todo:
        for inc in re.findall(r'^\s*#\s*include\s*"([^"]+)"', todo.pop(), re.M):
            for d in dirs:
                path = (d / inc).resolve()
                if path.is_file():
                    if path not in seen:
                        seen.add(path)
                        data = path.read_text(errors="replace")
                        out.append(f"{path}\n{data}".encode())
                        todo.append(data)
                    break
    return sorted(out)


def _wrapper_source(source_path: Path, rewritten: _Rewritten) -> str:
    lines = ["// Generated by minilora.emulator: the kernel source plus one launcher per __global__.",
             rewritten.prelude,
             f'#include "{source_path}"']
    def symbol(kernel: str) -> str:  # "ns::k<float>" -> "ns::__emu_kernel_k<float>" where k was renamed
        if kernel in (rewritten.namespaces or {}):  # a kernel found in namespace ns: its C++ name is ns::k
            kernel = f"{rewritten.namespaces[kernel]}::{kernel}"
        m = re.match(r"(\s*(?:[A-Za-z_]\w*\s*::\s*)*)([A-Za-z_]\w*)(.*)", kernel, re.S)
        return m.group(1) + _RENAMED_KERNEL + m.group(2) + m.group(3) if m and m.group(2) in rewritten.renamed else kernel

    entries = [f'    {{"{k}", &__emu::trampoline<&{symbol(k)}>, __emu::params_of(&{symbol(k)})}},'
               for k in rewritten.kernels]
    if entries:
        lines += ["static const __emu::KernelInfo __emu_kernel_list[] = {", *entries, "};"]
    table = "__emu_kernel_list" if entries else "nullptr"
    lines.append('extern "C" __attribute__((visibility("default"))) const __emu::KernelInfo* '
                 f"emu_kernel_table(int* n) {{ *n = {len(entries)}; return {table}; }}")
    consts = [f'    {{"{c}", (void*)&{c}, sizeof({c}), '
              f"__emu::describe<std::remove_cv_t<std::remove_all_extents_t<decltype({c})>>>(), "
              f"std::is_const<std::remove_all_extents_t<decltype({c})>>::value}},"
              for c in (rewritten.constants or {})]
    if consts:
        lines += ["static const __emu::ConstantInfo __emu_constant_list[] = {", *consts, "};"]
    lines.append('extern "C" __attribute__((visibility("default"))) const __emu::ConstantInfo* '
                 f"emu_constant_table(int* n) {{ *n = {len(consts)}; return {'__emu_constant_list' if consts else 'nullptr'}; }}")
    # __isConstant(p): whether p points into one of the file's __constant__ variables (ordinary memory here)
    inside = [f"(c >= (const char*)&{c} && c < (const char*)&{c} + sizeof({c}))" for c in rewritten.constant_memory]
    lines.append('extern "C" unsigned int emu_in_constant_memory(const void* p) { const char* c = (const char*)p; '
                 f"(void)c; return {' || '.join(inside) or '0'}; }}")
    lines.append(_subscripts.table_source(_subscripts.unchecked_subscripts(rewritten.text, _mask(rewritten.text),
                                                                           rewritten.shared_names)))
    return "\n".join(lines) + "\n"


@dataclass
class _Param:
    name: str
    code: int
    size: int
    elem_code: int
    elem_size: int
    elem_const: int  # 1 for `const T*`: the kernel promises not to write through it
    elem_lanes: int  # 2 for float2* / cuFloatComplex* (pairs of elem), 1 for a plain T*

    @property
    def is_pointer(self) -> bool:
        return self.code == _T_PTR


class _Module:
    """One compiled source: a ctypes library (fast mode) or a sanitizer runner executable."""

    def __init__(self, code: str, options, sanitize: bool, filename: str | None, variant: str | None = None,
                 name_expressions: tuple = ()):
        self.name_expressions = name_expressions
        self.variant = variant or ("asan" if sanitize else "fast")
        self.sanitize = self.variant == "asan"
        flags = _translate_options(options)
        self.flushes_denormals = _FLUSH_DENORMALS_MACRO in flags  # -ftz=true: float subnormals read and made as 0
        if filename:  # `#include "common.cuh"` next to the .cu file must keep working from the cache
            flags += ["-I", str(Path(filename).parent)]
        name = Path(filename).name if filename else next(iter(_find_kernels(_mask(code))), "kernels") + ".cu"
        shown = filename if filename and os.path.isabs(filename) else name
        self._ptx_refusals: list[str] = []
        rewritten = _rewrite_shared(_grid_constant_by_reference(self._translate_inline_ptx(_long_double_as_double(
            _expand_local_includes(code, shown, Path(filename).parent if filename else None, _include_dirs(flags))))))
        if _FAST_MATH_MACRO in flags:  # nvcc's --use_fast_math: a float `/` is __fdividef
            rewritten.text = _fast_division(rewritten.text)
        if filename and os.path.isabs(filename):  # errors and reports then name the user's own file
            rewritten.text = f'#line 1 "{filename}"\n' + rewritten.text
        if self.variant in ("fast", "memcheck") and _uses_volatile(_mask(rewritten.text)):
            self.variant = "lockstep"  # volatile loads and stores take turns across a warp's lanes
        runtime = _runtime_object(self.variant)
        key = _digest(_VERSION, runtime.name, rewritten.text, rewritten.prelude, name, *flags, *name_expressions,
                      *_VARIANT_FLAGS[self.variant], *_KERNEL_FLAGS, *_instrumentation(self.variant),
                      *_included_files(code, flags))
        folder = cache_dir() / key
        _make_cache_folder(folder)
        self.source_path = folder / name
        self.product = folder / ("runner" if self.sanitize else "module.so")
        self._stack_file = folder / "stack_usage"  # written before the product, so it exists with it
        self._kernels_file = folder / "kernels.json"  # likewise
        self._refusal_file = folder / "ptxas_refusal"  # likewise: what ptxas refuses that g++ compiles
        if not self.product.is_file():
            self._build(rewritten, name, flags, runtime)
        refusal = self._refusal_file.read_text() if self._refusal_file.is_file() else ""
        if refusal:
            raise CompileError(refusal)
        try:
            description = self._load()
        except _CorruptCache:
            # A truncated or damaged file in the cache (a full disk, a killed copy): build it again.
            self.product.unlink(missing_ok=True)
            self._build(rewritten, name, flags, runtime)
            try:
                description = self._load()
            except _CorruptCache as e:
                raise EmulatorError(f"the compiled kernel {self.product} cannot be loaded even after a rebuild "
                                    f"({e}); delete the folder {folder} and try again") from None
        self.kernels: dict[str, tuple[int, list[_Param]]] = {}
        for index, line in enumerate(description.splitlines()):
            kname, _, rest = line.partition("\t")  # a name expression such as "k<float, 128>" has spaces
            fields = rest.split()
            names = self.kernel_params.get(kname, [])
            if len(names) != len(fields):  # e.g. parameters made by a macro: fall back to positions
                names = [f"arg{i}" for i in range(len(fields))]
            params = [_Param(n, *map(int, f.split(","))) for n, f in zip(names, fields)]
            self.kernels[kname] = (index, params)
        self._by_spelling = {_spelling(k): k for k in self.kernels}
        for name, raw in self.constants.items():  # unfilled constants read as NaN / -1, never as silent zeros
            if not self.constant_initialized.get(name, False) and raw.flags.writeable:
                raw[:] = 0xFF

    def _translate_inline_ptx(self, text: str) -> str:
        """Each asm statement turned into C++ on the same line(s) (minilora/emulator_ptx.py).  One it cannot take
        becomes `__emu_ptx_refused<N>();`, which the build refuses with the Nth reason only where the
        preprocessor keeps it (_refuse_unsupported): an asm under #ifndef __CUDA_EMU__ is no error."""
        masked, out, last = _mask(text), [], 0
        for m in re.finditer(r"(?<![\w.])(?:asm|__asm__|__asm)\s*(?:volatile\b|__volatile__\b)?\s*(?:goto\s*)?\(", masked):
            close = _close_paren(masked, m.end() - 1)
            # in a macro (#define CP_ASYNC_COMMIT() asm volatile(...)) the statement spans continued lines: the
            # translation keeps them continued, and a refusal fires where the macro is used
            newline = " \\\n" if _in_macro(masked, m.start()) else "\n"
            try:
                code = translate_asm(text[m.end():close].replace("\\\n", "\n"))
            except PtxError as e:
                self._ptx_refusals.append(str(e))
                code = f"__emu_ptx_refused<{len(self._ptx_refusals) - 1}>();"
            # a statement of its own, as the asm was: `if (c) asm(...); else ...` keeps its else
            out += [text[last:m.start()], "do { " + code + " } while (0)" + newline * text.count("\n", m.start(), close + 1)]
            last = close + 1
        return "".join(out + [text[last:]])

    def global_array(self, name: str) -> np.ndarray:
        """The __constant__ or __device__ variable `name` as a writable 1-D NumPy array of its elements."""
        if name not in self.constants:
            raise AttributeError(f"no __constant__ or __device__ variable '{name}' at file scope in the source "
                                 f"(found: {', '.join(self.constants) or 'none'})")
        raw = self.constants[name]
        elem = self._constant_types[name]
        code = elem.elem_code if elem.code == _T_OTHER and elem.elem_lanes > 1 else elem.code
        dtype = np.dtype(np.uint16) if code == _T_BF16 else np.dtype(_CODE_DTYPE.get(code, np.uint8))
        # as CuPy's MemoryPointer too (copy_from_host, copy_from_device, ...): CuPy code fills it unedited
        return GlobalSymbol.of(raw.view(dtype) if raw.size % dtype.itemsize == 0 else raw, name)

    def pointer_globals(self) -> list:
        """uint64 views of the __device__ / __constant__ variables that may hold device pointers (pointers, 8-byte
        integers, structs), for the fenced launch to keep them valid across launches."""
        views = []
        for name, raw in getattr(self, "constants", {}).items():
            elem = self._constant_types[name]
            if elem.code in (_T_PTR, _T_OTHER, _T_U64, _T_I64) and raw.size % 8 == 0 and raw.ctypes.data % 8 == 0 \
                    and raw.flags.writeable:  # (a const table keeps its compiled addresses)
                views.append(raw.view(np.uint64))
        return views

    def find(self, name: str) -> str | None:
        """The kernel called `name`; a name expression matches however it is spaced ("k<float,128>")."""
        return self._by_spelling.get(_spelling(name))


    def _build(self, rewritten: _Rewritten, name: str, flags: list[str], runtime: Path) -> None:
        _write_atomic(self.source_path, rewritten.text)
        rewritten.kernels, templates = self._discover_kernels(flags)
        rewritten.namespaces = self._namespaces
        if self._renamed:  # a kernel called abs or exp: renamed, so that it does not clash with the C library's
            rewritten.text, rewritten.renamed = _rename_kernels(rewritten.text, self._renamed), self._renamed
            _write_atomic(self.source_path, rewritten.text)
        for expression in self.name_expressions:  # "k<float, 128>": an instance of the template k
            base = re.sub(r"\s+", "", expression.split("<", 1)[0]).split("::")[-1]
            if base not in templates and base not in rewritten.kernels:
                raise CompileError(f"name expression {expression!r}: no template __global__ function '{base}' in the "
                                   f"source (found: {', '.join(templates) or 'none'})")
            rewritten.kernels[expression] = templates.get(base, rewritten.kernels.get(base))
            bound = _instance_bound(self._template_bounds[base], expression) if base in self._template_bounds else None
            if bound is not None:
                self._bounds[expression] = bound
            if base in self._template_clusters:
                self._clusters[expression] = self._template_clusters[base]
        if not rewritten.kernels and templates:
            raise CompileError(f"the source has only template __global__ functions ({', '.join(templates)}): a template "
                               "kernel runs as an instance named in RawModule(..., name_expressions=['"
                               f"{next(iter(templates))}<...>']), as in CuPy")
        if not rewritten.kernels:
            raise CompileError("no __global__ function found in the source")
        rewritten.constants, rewritten.constant_memory = self._constants, self._constant_memory
        _write_atomic(self._kernels_file, json.dumps({"params": rewritten.kernels, "launch_bounds": self._bounds,
                                                      "cluster_dims": self._clusters,
                                                      "constants": self._constants,
                                                      "cpp_linkage": self.cpp_linkage, "namespaces": self._namespaces}))
        wrapper = self.product.parent / "wrapper.cpp"
        _write_atomic(wrapper, _wrapper_source(self.source_path, rewritten))

        def record_stack_usage(tmp: Path) -> None:
            total, refusal = _stack_usage(tmp)
            _write_atomic(self._refusal_file, refusal)
            _write_atomic(self._stack_file, str(total))

        def keep_log(warnings: str) -> None:  # what compile(log_stream=) writes, as CuPy writes NVRTC's log
            _write_atomic(self.product.parent / "build.log", warnings)

        # The kernel is compiled on its own (-c), then linked: the instrumentation goes into the kernel only (no
        # libubsan linked but the sanitizer build's), and every build force-includes the precompiled header made
        # with its own flags -- the sanitizer's too (parsing the header was most of a small kernel's compile).
        instrument = [] if self.sanitize else _instrumentation(self.variant)  # (the sanitizer's: in its flags)
        # the architecture and the language standard are the options that shape the header itself
        header_options = [f for f in flags if f.startswith(("-D__CUDA_ARCH__=", "-std=", _FAST_MATH_MACRO))]
        header = _precompiled_header([*_COMMON_FLAGS, *_VARIANT_FLAGS[self.variant], *_KERNEL_FLAGS,
                                      "-I", str(_INCLUDE), *header_options, *instrument])
        wrapper_object = self.product.parent / "wrapper.o"
        per_type_flush = self.flushes_denormals and platform.machine().lower() in _X86_64  # (-ftz=true)
        compiled = wrapper_object.with_suffix(".s") if per_type_flush else wrapper_object
        cmd = [_CXX, *_COMMON_FLAGS, *_VARIANT_FLAGS[self.variant], *_KERNEL_FLAGS, "-fstack-usage",
               "-include", str(header), "-I", str(_INCLUDE), *flags, *instrument,
               "-S" if per_type_flush else "-c", str(wrapper)]
        what = f"'{name}' for the CUDA emulator ({self.variant})"
        try:
            keep_log(_run_compiler(cmd, compiled, what, record_stack_usage))
        except CompileError as e:
            if "PCH" not in str(e):
                raise
            # a damaged .gch (a full disk, a killed copy) stops g++ ("cannot read PCH file"): without it g++
            # reads the stub's #include instead (and the next build of these flags makes the .gch again)
            header.with_name(header.name + ".gch").unlink(missing_ok=True)
            keep_log(_run_compiler(cmd, compiled, what, record_stack_usage))
        if per_type_flush:
            _write_atomic(compiled, _keep_double_subnormals(compiled.read_text()))
            _run_compiler([_CXX, "-c", str(compiled)], wrapper_object, what)
        # the sanitizer build links AddressSanitizer's and UBSan's runtimes (its flags); a library links none
        link = [_CXX, *_COMMON_FLAGS, *(_VARIANT_FLAGS[self.variant] if self.sanitize else _LIBRARY_LINK_FLAGS)]
        for attempt in range(2):
            try:
                fast_math = _FAST_MATH_LINK_FLAGS if _FAST_MATH_MACRO in flags else []
                return _run_compiler([*link, str(wrapper_object), str(runtime), *_LINK_FLAGS, *fast_math,
                                      *_HEAP_LINK_FLAGS],
                                     self.product, f"'{name}' for the CUDA emulator")
            except CompileError as e:
                if attempt or str(runtime) not in str(e):
                    raise
                runtime.unlink(missing_ok=True)  # the linker names a damaged cached runtime: rebuild it
                runtime = _runtime_object(self.variant)

    def _discover_kernels(self, flags: list[str]) -> tuple[dict, dict]:
        """The kernels as the compiler sees them: the source preprocessed with __global__ kept, so kernels
        that a macro or an included header defines are found too (a regex on the file alone misses them)."""
        cmd = [_CXX, "-E", "-std=c++17", "-D__EMU_FIND_KERNELS", "-include", str(_HEADER), "-I", str(_INCLUDE),
               *flags, "-x", "c++", str(self.source_path)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise CompileError(f"preprocessing '{self.source_path.name}' failed:\n{res.stderr.strip()}"
                               f"{_missing_header_hint(res.stderr)}")
        masked, self._bounds, self._template_bounds = _mask(res.stdout), {}, {}
        self._clusters, self._template_clusters = {}, {}
        _refuse_unsupported(res.stdout, masked, self._ptx_refusals)
        _refuse_non_void_kernels(res.stdout, masked)
        _refuse_dynamic_initialization(res.stdout, masked)
        constants = _find_constants(masked)
        self._constants = {**_find_device_globals(masked), **constants}
        self._constant_memory = tuple(constants)
        self.cpp_linkage = _cpp_linkage_kernels(masked)
        self._namespaces = {}
        kernels = _find_kernels(masked, bounds=self._bounds, namespaces=self._namespaces, clusters=self._clusters)
        templates = _find_kernels(masked, templates=True, bounds=self._template_bounds,
                                  clusters=self._template_clusters)
        _refuse_unconfigured_calls(res.stdout, masked, kernels)
        self._renamed = _names_taken_by_headers(res.stdout, masked, {*kernels, *templates})
        return kernels, templates

    def _load(self) -> str:
        """Open the compiled product; returns its kernel table (one line per kernel)."""
        try:
            self.stack_usage = int(self._stack_file.read_text())
            found = json.loads(self._kernels_file.read_text())
            self.kernel_params, self.launch_bounds = found["params"], found["launch_bounds"]
            self.cluster_dims = {name: tuple(dims) for name, dims in found["cluster_dims"].items()}
            self.constant_initialized = found["constants"]
            self.cpp_linkage = found.get("cpp_linkage", [])
            self.namespaces = found.get("namespaces", {})
        except (OSError, ValueError, KeyError, TypeError):
            raise _CorruptCache(f"{self._stack_file} or {self._kernels_file} is missing or unreadable") from None
        if self.sanitize:
            try:
                res = subprocess.run([str(self.product), "--describe"], capture_output=True, text=True,
                                     env=_sanitizer_env())
            except OSError as e:  # e.g. "Exec format error" for a truncated file
                raise _CorruptCache(str(e)) from None
            if res.returncode != 0 or "--constants--\n" not in res.stdout:
                raise _CorruptCache(f"the sanitizer runner failed to start:\n{res.stderr}")
            self.lib = None
            kernels, constants = res.stdout.split("--constants--\n", 1)
            constants, _, values = constants.partition("--values--\n")
            # The child has its own copy of each constant: the host fills these and every launch sends them.
            self.constants, self._constant_types = {}, {}
            for (name, _, size, elem, read_only), hexed in zip(_parse_constants(constants), values.splitlines()):
                self.constants[name] = _constant_array(np.frombuffer(bytes.fromhex(hexed), np.uint8).copy(), read_only)
                self._constant_types[name] = elem
            return kernels
        try:
            self.lib = ctypes.CDLL(str(self.product))
        except OSError as e:  # "file too short", "invalid ELF header", ...
            raise _CorruptCache(str(e)) from None
        self.lib.emu_release_stacks.restype = None
        self.lib.emu_release_stacks.argtypes = []
        self.lib.emu_set_heap_limit.argtypes = [ctypes.c_size_t]
        self.lib.emu_set_heap_limit.restype = None
        self.lib.emu_heap_live.restype = ctypes.c_size_t
        self.lib.emu_heap_live.argtypes = []
        self.lib.emu_heap_used.restype = ctypes.c_int
        self.lib.emu_heap_used.argtypes = []
        self.lib.emu_heap_reset.restype = None
        self.lib.emu_heap_reset.argtypes = []
        self.lib.emu_heap_books.restype = ctypes.c_void_p
        self.lib.emu_heap_books.argtypes = []
        self.lib.emu_share_heap.restype = None
        self.lib.emu_share_heap.argtypes = [ctypes.c_void_p]
        emulator_runtime.join_context(self.lib)  # the device heap is the context's, shared by every module
        self.lib.emu_launch.restype = ctypes.c_int
        self.lib.emu_launch.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_char_p, ctypes.c_size_t]
        self.lib.emu_output_size.restype = ctypes.c_size_t
        self.lib.emu_output_take.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        self.lib.emu_undefined_shuffle.restype = ctypes.c_size_t
        self.lib.emu_undefined_shuffle.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        self.lib.emu_describe.restype = ctypes.c_size_t
        self.lib.emu_describe.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        self.lib.emu_describe_constants.restype = ctypes.c_size_t
        self.lib.emu_describe_constants.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        self.lib.emu_fault_location.restype = ctypes.c_uint64
        self.lib.emu_fault_location.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        if not self.sanitize:  # where the fences' shadow lies (0: none), for the checks of every load and store
            self.lib.emu_fence_shadow.restype = None
            self.lib.emu_fence_shadow.argtypes = [ctypes.c_uint64]
            self.lib.emu_fence_shadow(fence_shadow() or 0)
        n = self.lib.emu_describe(None, 0)
        buf = ctypes.create_string_buffer(n)
        self.lib.emu_describe(buf, n)
        m = self.lib.emu_describe_constants(None, 0)
        consts = ctypes.create_string_buffer(m)
        self.lib.emu_describe_constants(consts, m)
        # The library's own memory: what the host writes here, the kernels read.
        self.constants, self._constant_types = {}, {}
        for name, address, size, elem, read_only in _parse_constants(consts.value.decode()):
            self.constants[name] = _constant_array(np.frombuffer((ctypes.c_char * size).from_address(address),
                                                                 np.uint8), read_only)
            self._constant_types[name] = elem
        return buf.value.decode()

    def source_line(self, offset: int) -> str | None:
        """'file.cu:12' for an instruction offset inside the compiled library (addr2line on its -g1
        line table), innermost inlined call first; None when unknown."""
        tool = shutil.which("addr2line")
        if tool is None or not offset:
            return None
        res = subprocess.run([tool, "-e", str(self.product), "-i", hex(offset)], capture_output=True, text=True)
        chain = res.stdout.splitlines() if res.returncode == 0 and res.stdout.strip() else ["??:0"]
        # Innermost first: an atomicAdd or __ldg inlined from the emulator's headers names the user's line instead.
        users = [c for c in chain if not c.startswith(str(EMU_DIR))]
        path, _, line = (users or chain)[0].split(" ")[0].rpartition(":")
        if path in ("", "??") or not line.isdigit() or line == "0":
            return None
        return f"{os.path.basename(path)}:{line}"


def _parse_constants(text: str):
    """(name, address, size, element _Param, read-only) per line of emu_describe_constants."""
    for line in text.splitlines():
        name, _, rest = line.partition("\t")
        address, size, elem, read_only = rest.split()
        yield name, int(address), int(size), _Param("element", *map(int, elem.split(","))), read_only == "1"


def _constant_array(raw: np.ndarray, read_only: bool) -> np.ndarray:
    """A __constant__ / __device__ variable's bytes for the host.  A const or constexpr one lies in the library's
    read-only pages: writing it would crash Python, so its array refuses writes (NumPy's "assignment destination
    is read-only"), as the variable refuses them in C++."""
    if read_only:
        raw.flags.writeable = False
    return raw


class _CorruptCache(Exception):
    """A compiled file in the cache cannot be loaded."""


_MODULES: dict[tuple, _Module] = {}


def _spelling(name: str) -> str:
    return re.sub(r"\s+", "", name)


def _get_module(code: str, options, sanitize: bool, filename: str | None, variant: str | None = None,
                name_expressions: tuple = ()) -> _Module:
    options = (options,) if isinstance(options, str) else tuple(options)
    if variant is None and not sanitize and _memcheck_default():
        variant = "memcheck"  # $MINILORA_EMU_MEMCHECK=1: the build its launches run, not a fast one never used
    search = list(options) + (["-I", str(Path(filename).parent)] if filename else [])
    key = (code, options, sanitize, filename, variant, name_expressions, str(cache_dir()),
           *_included_files(code, search))
    with _BUILD_LOCK:
        if key not in _MODULES:
            _MODULES[key] = _Module(code, options, sanitize, filename, variant, name_expressions)
        return _MODULES[key]


# ------------------------------------------------------------------------------------------------
# Arguments: checked against the compiled signature, packed CUDA-style as void** args.
# ------------------------------------------------------------------------------------------------
(_T_END, _T_OTHER, _T_VOID, _T_BOOL, _T_I8, _T_U8, _T_I16, _T_U16, _T_I32, _T_U32, _T_I64, _T_U64,
 _T_F32, _T_F64, _T_F16, _T_BF16, _T_PTR) = range(17)
_CODE_DTYPE = {_T_BOOL: np.bool_, _T_I8: np.int8, _T_U8: np.uint8, _T_I16: np.int16, _T_U16: np.uint16,
               _T_I32: np.int32, _T_U32: np.uint32, _T_I64: np.int64, _T_U64: np.uint64,
               _T_F32: np.float32, _T_F64: np.float64, _T_F16: np.float16}
_CODE_CTYPE = {_T_OTHER: "struct", _T_VOID: "void", _T_BOOL: "bool", _T_I8: "signed char", _T_U8: "unsigned char",
               _T_I16: "short", _T_U16: "unsigned short", _T_I32: "int", _T_U32: "unsigned int",
               _T_I64: "long long", _T_U64: "unsigned long long", _T_F32: "float", _T_F64: "double",
               _T_F16: "__half", _T_BF16: "__nv_bfloat16", _T_PTR: "void*"}


def _ctype(p: _Param) -> str:
    if p.is_pointer:
        return ("const " if p.elem_const else "") + _CODE_CTYPE.get(p.elem_code, "?") + "*"
    return _CODE_CTYPE.get(p.code, "?")


def _dtype_ok_for_pointer(p: _Param, dtype: np.dtype) -> bool:
    if p.elem_code == _T_PTR:  # a table of pointers: their 8-byte addresses
        return dtype.kind in "iu" and dtype.itemsize == 8
    if p.elem_code in (_T_VOID, _T_OTHER) or p.elem_size == 1:
        return True  # void*, char*, struct*: raw memory, any dtype
    if p.elem_code == _T_BF16:
        return dtype.itemsize == 2 and (dtype.name == "bfloat16" or dtype in (np.uint16, np.int16))
    if dtype.kind == "c":  # complex64 is pairs of floats: a float2* / cuFloatComplex*, not a float*
        return p.elem_lanes == 2 and dtype.itemsize == 2 * p.elem_size and p.elem_code in (_T_F32, _T_F64)
    return dtype == np.dtype(_CODE_DTYPE[p.elem_code])


# CuPy passes a Python scalar as the NumPy scalar it becomes (cupy/cuda/function.pyx, `_pointer`): an int (a bool
# too) as np.int64, a float as np.float64, a complex as np.complex128, and the kernel reads its parameter's size of
# those bytes.  Where that reads the value (an int into an integer parameter it fits, a float into a double, a
# complex into a double2) it is passed; where a GPU reads other bits (2.5 into a float parameter reads the float64's
# low half: 0.0) it is refused, as a NumPy scalar of the wrong type is.
def _cupy_dtype_of_python_scalar(value) -> np.dtype:
    if isinstance(value, numbers.Integral):
        return np.dtype(np.int64)
    return np.dtype(np.float64 if isinstance(value, numbers.Real) else np.complex128)


def _python_scalar_refused(where: str, ctype: str, value, want: str) -> TypeError:
    cupy = _cupy_dtype_of_python_scalar(value)
    return TypeError(f"{where} is {ctype} but got {type(value).__name__} {value!r}, a Python scalar, which CuPy "
                     f"passes as np.{cupy.name} ({cupy.itemsize} bytes): the kernel would read its bytes as the wrong "
                     f"type (on a GPU, a wrong number without an error); pass {want}")


def _scalar_bytes(kernel: str, i: int, p: _Param, value) -> bytes:
    where = f"argument {i} ('{p.name}') of kernel '{kernel}'"
    if isinstance(value, np.ndarray):
        raise TypeError(f"{where} is a {_ctype(p)} scalar but got an array; pass e.g. np.int32(n)")
    if p.code == _T_OTHER:
        if isinstance(value, (bytes, np.void)) and len(bytes(value)) == p.size:
            return bytes(value)
        if p.elem_lanes == 2 and p.elem_code in (_T_F32, _T_F64) and isinstance(value, (numbers.Complex, np.generic)) \
                and not isinstance(value, np.ndarray):  # float2 / double2: cuFloatComplex / cuDoubleComplex
            ctype = np.complex64 if p.elem_code == _T_F32 else np.complex128
            if isinstance(value, np.generic) and value.dtype != ctype:
                raise TypeError(f"{where} is a {p.size}-byte pair of {_CODE_CTYPE[p.elem_code]}s (a complex number): "
                                f"pass np.{np.dtype(ctype).name}(...), got np.{value.dtype.name}")
            if not isinstance(value, np.generic) and _cupy_dtype_of_python_scalar(value) != ctype:
                raise _python_scalar_refused(where, f"a {p.size}-byte pair of {_CODE_CTYPE[p.elem_code]}s", value,
                                             f"np.{np.dtype(ctype).name}({value!r})")
            return np.array(value, ctype).tobytes()
        raise TypeError(f"{where} is a {p.size}-byte struct; pass its bytes (bytes or np.void)")
    if p.code == _T_BF16:
        if isinstance(value, np.generic) and (value.dtype.name == "bfloat16" or value.dtype in (np.uint16, np.int16)):
            return value.tobytes()  # its bits: how CuPy users pass one (NumPy has no bfloat16; CuPy refuses ml_dtypes')
        if isinstance(value, numbers.Number) and not isinstance(value, np.generic):
            raise _python_scalar_refused(where, "__nv_bfloat16", value, "its bits as np.uint16")
        raise TypeError(f"{where} is __nv_bfloat16; pass its bits as np.uint16, got {type(value).__name__}")
    dtype = np.dtype(_CODE_DTYPE[p.code])
    if isinstance(value, np.generic):
        if value.dtype != dtype:
            raise TypeError(f"{where} is {_ctype(p)} (np.{dtype.name}) but got np.{value.dtype.name}: the kernel "
                            f"would read its bytes as the wrong type; pass np.{dtype.name}(...)")
        return value.tobytes()
    if isinstance(value, numbers.Integral) and dtype.kind in "iub":  # its int64's low bytes: the value, if it fits
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            if not info.min <= int(value) <= info.max:
                raise OverflowError(f"{where}: {value} does not fit in {_ctype(p)}")
        return np.array(value, dtype).tobytes()
    if isinstance(value, numbers.Number):
        if dtype == np.float64 and isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
            return np.array(value, dtype).tobytes()  # a float64, as CuPy passes it
        raise _python_scalar_refused(where, _ctype(p), value, f"np.{dtype.name}({value!r})")
    raise TypeError(f"{where} is {_ctype(p)} but got {type(value).__name__} {value!r}")


def _typed_argument(what: str, value, kind: type) -> None:
    """Cython's check of a ``str code`` / ``tuple options`` argument in CuPy's signatures: None or exactly that type."""
    if value is not None and type(value) is not kind:
        raise TypeError(f"Argument '{what}' has incorrect type (expected {kind.__name__}, got {_c_type_name(value)})")


def _c_type_name(value) -> str:
    """A type's name as CPython's tp_name spells it in Cython's errors: NumPy's scalars carry their module."""
    kind = type(value)
    return f"numpy.{kind.__name__}" if kind.__module__ == "numpy" else kind.__name__


def _launch_dims(grid, block) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The grid and block as CuPy launches them (cupy/cuda/function.pyx, ``Function.__call__(self, tuple grid,
    tuple block, ...)``): each must be a tuple -- Cython refuses an int or a list in its words --, padded with 1s
    and cut to 3 (a 4th entry is dropped), each entry at least 1 (so grid=(0,) for an empty input runs one block)
    and an integer (a float is refused as Cython's conversion to Py_ssize_t refuses it)."""
    for what, value in (("grid", grid), ("block", block)):
        if value is not None and type(value) is not tuple:  # (None passes Cython's test and fails the +)
            raise TypeError(f"Argument '{what}' has incorrect type (expected tuple, got {_c_type_name(value)})")
    grid, block = (grid + (1, 1))[:3], (block + (1, 1))[:3]
    return tuple(operator.index(max(1, d)) for d in grid), tuple(operator.index(max(1, d)) for d in block)


def _argument_slots(shape: tuple, like: np.ndarray | None = None) -> np.ndarray:
    """Zeroed uint64 slots for a launch's arguments, one row each (a copy of `like`'s, given it).  A __grid_constant__ parameter refers to its
    slot in place (_grid_constant_by_reference): 16-byte rows (NumPy's alignment) suit every argument up to 16
    bytes, and wider rows (a struct above 16 bytes) are 64 bytes apart from a 64-byte aligned start, so a struct
    aligned to up to 64 bytes finds its slot aligned."""
    if shape[1] == 2:
        return np.zeros(shape, np.uint64) if like is None else like.copy()
    nbytes = shape[0] * shape[1] * 8
    raw = np.zeros(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    slots = raw[start:start + nbytes].view(np.uint64).reshape(shape)
    if like is not None:
        slots[...] = like
    return slots


@dataclass
class _Packed:
    argv: np.ndarray            # void* per argument, pointing into `slots` (what CUDA calls void** args)
    slots: np.ndarray           # 16 bytes per argument: a device pointer or a scalar value
    arrays: list                # (argument index, ndarray) for every pointer argument
    scalars: list               # (argument index, bytes) for every scalar argument


# Schedules tried by check_races: (name, order code for threads and blocks, seed).
_SCHEDULES = [("forward", 0, 0), ("reverse", 1, 0), ("random(seed=1)", 2, 1), ("random(seed=2)", 2, 2)]


# cupy.RawKernel.attributes' keys, in its order
_ATTRIBUTE_NAMES = ("max_threads_per_block", "shared_size_bytes", "const_size_bytes", "local_size_bytes", "num_regs",
                    "ptx_version", "binary_version", "cache_mode_ca", "max_dynamic_shared_size_bytes",
                    "preferred_shared_memory_carveout")
_DEFAULT_DYNAMIC_SHARED = 48 * 1024  # CUDA's per-kernel limit until the kernel opts in to more
_MAX_SHARED = 227 * 1024  # sm_90's shared memory per block, static + dynamic (runtime.cpp's kMaxShared)


def _check_backend(backend, jitify) -> tuple[str, bool]:
    """CuPy's `backend` and `jitify` arguments, refused as CuPy refuses them.  Either backend compiles the same
    source the same way here (g++), and so does Jitify (its job, headers NVRTC lacks, is g++'s own)."""
    if not isinstance(backend, str):  # Cython's refusal of a typed `str backend` argument
        raise TypeError(f"Argument 'backend' has incorrect type (expected str, got {type(backend).__name__})")
    if backend not in ("nvrtc", "nvcc"):
        raise ValueError(f"Invalid backend {backend}")
    if jitify and backend != "nvrtc":
        raise ValueError("Jitify only supports NVRTC")
    return backend, bool(jitify)


class RawKernel:
    """A CUDA kernel compiled for the CPU emulator; the API mirrors ``cupy.RawKernel``.

    ``kernel(grid, block, args, shared_mem=0)`` launches it: ``grid`` and ``block`` are tuples of up to 3 ints
    (an int or a list is refused in CuPy's words; ``shared_mem`` is a keyword, as CuPy's), ``args`` a tuple of
    C-contiguous NumPy arrays (device pointers) and NumPy or Python
    scalars checked against the kernel's parameter types (a Python scalar as CuPy passes it: an int as an int64,
    a float as a float64, refused where a GPU would read those bytes as another number, 2.5 for a ``float``).
    Arrays are read and written in place.

    ``sanitize=True`` builds with AddressSanitizer and bounds checks and runs each launch in a child
    process: an out-of-bounds access raises ``KernelFault`` with the report, and Python survives.
    """

    def __init__(self, code: str, name: str, options: tuple = (), backend: str = "nvrtc", *,
                 translate_cucomplex: bool = False, enable_cooperative_groups: bool = False, jitify: bool = False,
                 sanitize: bool = False, filename: str | None = None, _module: _Module | None = None,
                 _variant: str | None = None, _name_expressions: tuple = ()):
        # CuPy's signature, __init__(self, str code, str name, tuple options=(), str backend='nvrtc', *, ...): so that
        # RawKernel(code, name, options, "nvcc") is a backend, and a list of options is Cython's refusal, as there
        _typed_argument("code", code, str)
        _typed_argument("name", name, str)
        _typed_argument("options", options, tuple)
        self.backend, self.jitify = _check_backend(backend, jitify)
        self.translate_cucomplex = bool(translate_cucomplex)  # the stand-in cuComplex.h needs no translation
        self.code, self.name, self.options, self.sanitize = code, name, options, sanitize
        self._name_expressions, self._builds = _name_expressions, {}  # variant -> this kernel from that build
        self._initcheck = False  # on the racecheck build's kernel: report uninitialized reads instead of hazards
        # As in CuPy: launches are cooperative (every block resident at once), so grid.sync() works.
        self.enable_cooperative_groups = bool(enable_cooperative_groups)
        self._filename, self._variant = filename, _variant
        # As CUDA's cudaFuncAttributeMaxDynamicSharedMemorySize: a launch may ask at most this many bytes
        # of dynamic shared memory; above 48 KB (static + dynamic) a kernel must opt in by raising it first.
        self._max_dynamic_shared, self._opted_in = _DEFAULT_DYNAMIC_SHARED, False
        self._carveout, self._resource_usage = -1, None  # the driver's default carveout; nvcc's report, when read
        self._mod = _module
        if _module is not None:
            self._bind()

    # -- function attributes, as CuPy reads them from the driver (minilora/emulator_attributes.py) ---------------
    @property
    def attributes(self) -> dict:
        """CuPy's ``RawKernel.attributes``: every function attribute by name, in CuPy's order.  Registers, static
        shared memory and local memory come from ``nvcc --resource-usage`` where nvcc is on PATH, else are -1
        (CuPy's value for an attribute the driver cannot report): g++ cannot say what ptxas would allocate."""
        return {name: getattr(self, name) for name in _ATTRIBUTE_NAMES}

    def _resources(self) -> dict:
        """This kernel's line of nvcc's resource report ({} without nvcc, or where nvcc rejects the source)."""
        if self._resource_usage is None:
            mod = self.compile()._mod
            usage = _attributes.resource_usage(
                self.code, self.options if not isinstance(self.options, str) else (self.options,),
                self._name_expressions, self.binary_version,
                str(Path(self._filename).parent) if self._filename else None, cache_dir()) or {}
            self._resource_usage = usage.get(_attributes._spelled(mod.find(self.name) or self.name), {})
        return self._resource_usage

    @property
    def num_regs(self) -> int:
        """Registers per thread, as ptxas allocates them (nvcc on PATH), else -1."""
        return self._resources().get("registers", _attributes.UNKNOWN)

    @property
    def shared_size_bytes(self) -> int:
        """Bytes of static ``__shared__`` memory per block, as ptxas lays them out (nvcc on PATH), else -1."""
        return self._resources().get("shared", _attributes.UNKNOWN)

    @property
    def local_size_bytes(self) -> int:
        """Bytes of local memory per thread (ptxas's stack frame: local arrays, spills), else -1."""
        return self._resources().get("local", _attributes.UNKNOWN)

    @property
    def const_size_bytes(self) -> int:
        """Bytes of the source's ``__constant__`` variables (the module's user constant bank)."""
        mod = self.compile()._mod
        return sum(mod.constants[name].nbytes for name in _find_constants(_mask(self.code)) if name in mod.constants)

    @property
    def max_threads_per_block(self) -> int:
        """The most threads a launch may have: 1024, ``__launch_bounds__``, and what 64 K registers allow for the
        kernel's registers (known with nvcc on PATH)."""
        bound = self.compile()._mod.launch_bounds.get(self.name)
        return _attributes.max_threads_per_block(self.num_regs, bound)

    @property
    def ptx_version(self) -> int:
        """The virtual architecture compiled for, 10 * major + minor: ``-arch=sm_XY``'s, default sm_90."""
        return _arch_of(self.options)

    @property
    def binary_version(self) -> int:
        """The real architecture compiled for (the same: the emulator builds for one architecture)."""
        return _arch_of(self.options)

    @property
    def cache_mode_ca(self) -> int:
        """1 where ``-Xptxas -dlcm=ca`` was given (global loads cached in L1), else 0."""
        return _attributes.caches_globals_in_l1(self.options if not isinstance(self.options, str) else
                                                (self.options,))

    @property
    def preferred_shared_memory_carveout(self) -> int:
        """The share of the unified L1 / shared memory asked for shared memory, in percent; -1 (the driver's
        default) until set.  It steers only how many blocks fit on a multiprocessor: no effect here."""
        return self._carveout

    @preferred_shared_memory_carveout.setter
    def preferred_shared_memory_carveout(self, fraction: int) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Integral):
            raise TypeError(f"an integer is required, got {type(fraction).__name__}")
        if fraction not in _attributes.SETTABLE_CARVEOUT:
            raise _invalid_value(f"preferred_shared_memory_carveout must be -1 (the default) or a percentage "
                                 f"0..100, got {fraction!r}")
        self._carveout = int(fraction)

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        """CuPy's name for cudaFuncAttributeMaxDynamicSharedMemorySize: the most dynamic shared memory a launch
        may ask.  Until set, static + dynamic shared memory must fit in 48 KB, as on CUDA, so a GPU reports
        48 KB less the kernel's static arrays (known with nvcc on PATH); setting it (up to 227 KB less the
        static arrays) is the opt-in above that."""
        if not self._opted_in and self.shared_size_bytes > 0:
            return self._max_dynamic_shared - self.shared_size_bytes
        return self._max_dynamic_shared

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= _MAX_SHARED:
            raise _invalid_value(f"max_dynamic_shared_size_bytes must be an int in 0..{_MAX_SHARED} bytes, "
                                 f"got {value!r}")
        self._max_dynamic_shared, self._opted_in = int(value), True

    def _bind(self) -> None:
        found = self._mod.find(self.name)
        if found is None:
            hint = " (a template kernel is launched through RawModule(..., name_expressions=[...]))" \
                if "<" in self.name else ""
            raise AttributeError(f"no __global__ function '{self.name}' in the source "
                                 f"(found: {', '.join(self._mod.kernels) or 'none'}){hint}")
        if found in self._mod.cpp_linkage and _spelling(found) not in {_spelling(e) for e in self._name_expressions}:
            raise AttributeError(f"__global__ function '{found}' has C++ linkage (no extern \"C\"), so its symbol is "
                                 "a mangled name and CuPy cannot find it by this name (CUDA_ERROR_NOT_FOUND): declare "
                                 "it extern \"C\", or pass name_expressions="
                                 f"['{'::'.join(filter(None, (self._mod.namespaces.get(found), found)))}'] to RawModule")
        self.name = found  # as spelled in name_expressions, like every message of the runtime
        self._index, self.params = self._mod.kernels[found]

    def compile(self, log_stream=None) -> "RawKernel":
        """Build (or fetch from the cache) now rather than at the first launch.  ``log_stream`` (CuPy's: sys.stdout
        or a file) receives the compiler's messages -- g++'s warnings on the emulator's source, kept with the
        cached build; none for a clean source, as NVRTC's log."""
        if self._mod is None:
            self._mod = _get_module(self.code, self.options, self.sanitize, self._filename, self._variant,
                                    self._name_expressions)
            self._bind()
        _write_build_log(self._mod, log_stream)
        return self

    def _build_of(self, variant: str) -> "RawKernel":
        """The same kernel from another build of its source, "racecheck", "memcheck" or "fast" (compiled on first
        use, then cached), with this one's dynamic shared memory limit."""
        if variant not in self._builds:
            self._builds[variant] = RawKernel(self.code, self.name, self.options, self.backend,
                                              translate_cucomplex=self.translate_cucomplex, jitify=self.jitify,
                                              filename=self._filename,
                                              enable_cooperative_groups=self.enable_cooperative_groups,
                                              _variant=variant, _name_expressions=self._name_expressions).compile()
        other = self._builds[variant]
        other._max_dynamic_shared, other._opted_in = self._max_dynamic_shared, self._opted_in
        return other

    def _launch_in(self, other: "RawKernel", *launch, **options) -> None:
        """Launch `other` (another build of this kernel): it has its own copy of each __constant__ / __device__
        variable, so it sees what get_global filled in, and what the kernel writes comes back."""
        _copy_globals(self.compile()._mod, other._mod)
        try:
            other(*launch, **options)
        finally:
            _copy_globals(other._mod, self._mod)

    @property
    def source_path(self) -> Path:
        """The (rewritten) source file that was compiled; sanitizer reports name it."""
        return self.compile()._mod.source_path

    # -- launching ---------------------------------------------------------------------------------
    def __call__(self, grid, block, args, *positional, shared_mem: int = 0, stream=None, check_races: bool = False,
                 racecheck: bool = False, initcheck: bool = False, memcheck: bool | None = None,
                 stack_size: int | None = None, timeout: float | None = None, workers: int | None = None):
        """Launch.  ``stack_size``: bytes of stack per CUDA thread (default: what the compiler reports
        the kernel file's functions need, plus 64 KiB); a thread that needs more stops the launch with a
        KernelFault.  ``timeout``: seconds after which a launch that has not finished raises KernelFault
        (default none; with ``sanitize=True`` the default is 600 s).  Ctrl-C stops a running launch
        with KeyboardInterrupt.  ``check_races``: run under several thread orders and compare the
        results.  ``racecheck``: a build whose every shared-memory access is checked, as
        compute-sanitizer's racecheck does: two threads touching the same byte (one writing) with no
        __syncthreads() -- or, within a warp, no __syncwarp() -- in between raise RaceError naming both
        threads and both source lines.  ``initcheck``: the same build, checking instead that no thread reads a
        __shared__ byte before some thread of its block wrote it (KernelFault naming the thread, the array,
        the byte and the line); a GPU's shared memory starts out indeterminate.  (compute-sanitizer's
        initcheck covers global memory, which is always initialized here.)  ``memcheck`` (default:
        ``$MINILORA_EMU_MEMCHECK``, else off): a build whose every load is checked against the bytes still
        mapped around each argument array's fenced copy, so that a read of x[-1], or of the < 16 bytes past an
        odd-sized array, is a KernelFault at its line, as compute-sanitizer's memcheck names it; without it such
        a read returns a fill pattern silently, as a GPU returns the allocation's padding (an access further
        out, and any write next to an array, is named either way).  It costs 1.4-4x run time (racecheck,
        initcheck, sanitize and kernels that use volatile check every access anyway).  ``stream``: as CuPy's, a
        ``minilora.emulator.cuda.Stream`` or None (the current stream); the launch has finished when the call
        returns, whatever the stream (minilora/emulator_streams.py).  ``workers``: how many OS threads may run blocks at once (default:
        ``$MINILORA_EMU_WORKERS``, else the number of CPUs this process may use; the extra ones start
        only once the launch looks longer than about 2 ms).  CUDA blocks are
        independent, so the results are the same for any number -- except that float atomics then add
        in a varying order; a cooperative launch, check_races' reverse and random schedules, racecheck
        and sanitize run on one."""
        if positional:  # CuPy's RawKernel.__call__(self, grid, block, args, **kwargs): shared_mem= is a keyword
            raise TypeError(f"__call__() takes exactly 3 positional arguments ({3 + len(positional)} given)")
        _launch_dims(grid, block)  # CuPy's refusals first, in its words
        stream_of(stream, f"kernel '{self.name}'")
        if racecheck or initcheck:
            tool = "racecheck" if racecheck else "initcheck"
            if racecheck and initcheck:
                raise ValueError("racecheck=True and initcheck=True are separate tools (as compute-sanitizer's "
                                 "are): run them one at a time")
            if self.sanitize or self.enable_cooperative_groups or check_races:
                raise ValueError(f"{tool}=True cannot be combined with sanitize, check_races or a cooperative "
                                 "launch; run them separately")
            checked = self._build_of("racecheck")
            checked._initcheck = initcheck
            return self._launch_in(checked, grid, block, args, shared_mem=shared_mem, stack_size=stack_size,
                                   timeout=timeout)
        built, wanted = self.compile()._mod.variant, _memcheck_default() if memcheck is None else memcheck
        if built in ("fast", "memcheck") and built != ("memcheck" if wanted else "fast"):
            return self._launch_in(self._build_of("memcheck" if wanted else "fast"), grid, block, args,
                                   shared_mem=shared_mem, stream=stream, check_races=check_races, memcheck=wanted,
                                   stack_size=stack_size, timeout=timeout, workers=workers)
        cfg = self._config(grid, block, shared_mem, stack_size, timeout, workers)
        packed = self._pack(args)
        if self._mod.sanitize:  # the child process has copies of its own, every access checked
            return self._launch_checked(cfg, packed) if check_races else self._launch(cfg, packed, 0, 0, echo=True)
        self._launch_fenced(cfg, packed, check_races)

    def _launch_fenced(self, cfg: np.ndarray, packed: _Packed, check_races: bool) -> None:
        """Launch on fenced copies of the argument arrays (minilora/emulator_fence.py): an access past an array's
        end is a KernelFault naming the argument, where in place it overwrote the host's heap."""
        fenced = FencedArguments(packed.arrays, {i: p.name for i, p in enumerate(self.params)},
                                 {i for i, p in enumerate(self.params) if p.is_pointer and not p.elem_const},
                                 {i for i, p in enumerate(self.params) if p.is_pointer and (
                                     p.elem_code == _T_PTR or (p.elem_code == _T_U64 and p.elem_const))},
                                 {i for i, p in enumerate(self.params) if p.is_pointer and (  # may hold addresses
                                     (p.elem_code == _T_OTHER and p.elem_lanes == 1) or p.elem_code == _T_U64)})
        slots = _argument_slots(packed.slots.shape, like=packed.slots)
        for i, pointer in fenced.pointers.items():
            slots[i, 0] = pointer
        argv = np.uint64(slots.ctypes.data) + (packed.argv - np.uint64(packed.slots.ctypes.data))
        staged = _Packed(argv, slots, fenced.arrays, packed.scalars)
        pointer_globals = self._mod.pointer_globals()
        fenced.follow_globals(pointer_globals)
        try:
            if check_races:
                self._launch_checked(cfg, staged)
            else:
                self._launch(cfg, staged, 0, 0, echo=True)
        except KernelFault as e:
            raise KernelFault(fenced.explain(str(e))) from None
        finally:
            fenced.unfollow_globals(pointer_globals)  # a pointer the kernel saved outlives the launch's copies
            problem = fenced.release()
        if problem:
            raise KernelFault(f"kernel '{self.name}': {problem}")

    def _config(self, grid, block, shared_mem, stack_size=None, timeout=None, workers=None) -> np.ndarray:
        g, b = _launch_dims(grid, block)
        if b[0] * b[1] * b[2] > 1024 or b[0] > 1024 or b[1] > 1024 or b[2] > 64:
            raise _invalid_value(f"block {b} of kernel '{self.name}' is too large: CUDA allows at most 1024 threads "
                                 "per block (x, y <= 1024, z <= 64)")
        if g[0] > 2**31 - 1 or g[1] > 65535 or g[2] > 65535:
            raise _invalid_value(f"grid {g} of kernel '{self.name}' exceeds CUDA's limits (x <= 2^31 - 1, "
                                 "y, z <= 65535)")
        bound = self._mod.launch_bounds.get(self.name)
        if bound is not None and b[0] * b[1] * b[2] > bound:
            raise CUDADriverError(f"CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: too many resources requested for launch "
                                  f"(block {b} of kernel '{self.name}' has {b[0] * b[1] * b[2]} threads, but the "
                                  f"kernel is declared __launch_bounds__({bound}))")
        shared_mem = operator.index(shared_mem)  # Cython's size_t: a float is a TypeError, -1 an OverflowError
        if shared_mem < 0:
            raise OverflowError("can't convert negative value to size_t")
        if shared_mem > _MAX_SHARED:
            raise _invalid_value(f"kernel '{self.name}' asks shared_mem={shared_mem} bytes, above the GPU's "
                                 f"{_MAX_SHARED} bytes per block")
        if shared_mem > self._max_dynamic_shared:  # (runtime.cpp adds the static arrays as it meets them)
            raise _invalid_value(f"kernel '{self.name}' asks {shared_mem} bytes of dynamic shared memory, above its "
                                 f"max_dynamic_shared_size_bytes {self._max_dynamic_shared}: over 48 KB a "
                                 f"kernel opts in first, kernel.max_dynamic_shared_size_bytes = {shared_mem}")
        if stack_size is None:
            stack_size = _BASE_STACK + self._mod.stack_usage
        elif isinstance(stack_size, bool) or not isinstance(stack_size, numbers.Integral) or \
                not 16 * 1024 <= stack_size <= 1 << 30:
            raise ValueError(f"stack_size must be an int number of bytes in 16 KiB..1 GiB, got {stack_size!r}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, numbers.Real)
                                    or not 0 < timeout < 1e7):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        timeout_us = 0 if timeout is None else max(1, round(timeout * 1e6))
        workers = default_workers() if workers is None else _check_workers(workers, "workers")
        opt_in = self._max_dynamic_shared if self._opted_in else 0  # runtime.cpp checks static + dynamic with it
        cluster = self._cluster_shape(g)
        return np.array([*g, *b, int(shared_mem), 0, 0, int(stack_size), timeout_us, workers << 8 | opt_in << 16,
                         *cluster], dtype=np.uint64)

    def _cluster_shape(self, grid: tuple) -> tuple[int, int, int]:
        """The kernel's __cluster_dims__ (1, 1, 1 without), checked against the grid as CUDA's launch checks it.
        Only the compile-time shape: CuPy's RawKernel has no launch-time cluster (cudaLaunchKernelEx's attribute)."""
        cluster = tuple(self._mod.cluster_dims.get(self.name, (1, 1, 1)))
        blocks = cluster[0] * cluster[1] * cluster[2]
        if blocks > _MAX_PORTABLE_CLUSTER:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_CLUSTER_SIZE: kernel '{self.name}' is declared __cluster_dims__"
                                  f"{cluster}: {blocks} blocks per cluster, above the portable {_MAX_PORTABLE_CLUSTER} "
                                  "(a larger cluster needs cudaFuncAttributeNonPortableClusterSizeAllowed, which "
                                  "CuPy's RawKernel cannot set)")
        if self.enable_cooperative_groups and blocks > 1:
            raise ValueError(f"kernel '{self.name}': a cooperative launch (enable_cooperative_groups=True) of a "
                             "kernel with __cluster_dims__ is not modelled by minilora's CUDA emulator: use "
                             "cluster.sync() within the clusters, or grid.sync() without them")
        if any(n % c for n, c in zip(grid, cluster)):
            raise CUDADriverError(f"CUDA_ERROR_INVALID_CLUSTER_SIZE: grid {grid} of kernel '{self.name}' is not a "
                                  f"whole number of its __cluster_dims__{cluster} clusters: each grid dimension must be "
                                  "a multiple of the cluster's")
        return cluster

    def _pack(self, args) -> _Packed:
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"args of kernel '{self.name}' must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.params):
            sig = ", ".join(f"{_ctype(p)} {p.name}" for p in self.params)
            raise TypeError(f"kernel '{self.name}' takes {len(self.params)} arguments ({sig}), got {len(args)}")
        # One slot per argument, 16 bytes, or more when a struct passed by value is bigger.
        width = max([16] + [-(-p.size // 16) * 16 for p in self.params if not p.is_pointer])
        width = width if width == 16 else -(-width // 64) * 64  # a struct above 16 bytes: 64-byte aligned rows
        slots = _argument_slots((max(len(args), 1), width // 8))
        arrays, scalars = [], []
        for i, (p, a) in enumerate(zip(self.params, args)):
            where = f"argument {i} ('{p.name}') of kernel '{self.name}'"
            if p.is_pointer and a is None:  # a null pointer, as CuPy passes None
                slots[i, 0] = 0
            elif p.is_pointer and p.elem_code == _T_PTR and isinstance(a, (list, tuple)):
                table = self._pointer_table(where, a)
                slots[i, 0] = table.ctypes.data
                arrays += [(i, table)] + [(i, m) for m in a if m is not None]
            elif p.is_pointer:
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"{where} is a pointer ({_ctype(p)}): pass a NumPy array, got {type(a).__name__}")
                if not a.flags.c_contiguous:
                    raise ValueError(f"{where} is not C-contiguous, but a kernel sees only a flat pointer; "
                                     "pass np.ascontiguousarray(x)")
                if not a.flags.aligned:
                    raise ValueError(f"{where} is not aligned to its dtype ({a.dtype}, {a.dtype.alignment} bytes), so "
                                     "every load through it would be a misaligned access (device memory always is "
                                     "aligned); pass np.require(x, requirements='A')")
                if not _dtype_ok_for_pointer(p, a.dtype):
                    raise TypeError(f"{where} is {_ctype(p)} but the array has dtype {a.dtype}")
                if not a.flags.writeable and not p.elem_const:
                    raise ValueError(f"{where} is a read-only array but the kernel's {_ctype(p)} may write "
                                     "through it; declare the parameter const or pass a writeable copy")
                slots[i, 0] = a.ctypes.data
                arrays.append((i, a))
            else:
                raw = _scalar_bytes(self.name, i, p, a)
                slots[i].view(np.uint8)[:len(raw)] = np.frombuffer(raw, np.uint8)
                scalars.append((i, raw))
        argv = (slots.ctypes.data + width * np.arange(len(args), dtype=np.uint64)).astype(np.uint64)
        return _Packed(argv, slots, arrays, scalars)

    def _pointer_table(self, where: str, arrays) -> np.ndarray:
        """A table of pointers (``float* const* tensors``) given as a list of arrays (None: a null pointer): the
        uint64 table of their addresses, which the launch follows into fenced copies of each array."""
        if self._mod.sanitize:
            raise ValueError(f"{where} is a table of pointers: sanitize=True runs the kernel in another process, "
                             "which cannot follow addresses into this one; launch without sanitize")
        for k, m in enumerate(arrays):
            if m is not None and not (isinstance(m, np.ndarray) and m.flags.c_contiguous and m.flags.aligned
                                      and m.flags.writeable):
                raise TypeError(f"{where} is a table of pointers: each element must be a writeable, C-contiguous, "
                                f"aligned NumPy array or None, element {k} is {type(m).__name__}")
        return np.array([0 if m is None else m.ctypes.data for m in arrays], np.uint64)

    def _launch(self, cfg: np.ndarray, packed: _Packed, order: int, seed: int, echo: bool) -> None:
        cfg = cfg.copy()
        cfg[7], cfg[8] = order, seed
        cfg[11] = (int(cfg[11]) & ~0xFF) | (1 if _ctrl_c_raises_keyboard_interrupt() else 0) | \
            (2 if self.enable_cooperative_groups else 0) | (4 if _START_WORKERS_AT_ONCE else 0) | \
            (16 if self._initcheck else 0) | (32 if self._mod.flushes_denormals else 0)
        if self._mod.sanitize:
            out = _launch_in_child(self, cfg, packed)
        else:
            err = ctypes.create_string_buffer(8192)
            where = ctypes.create_string_buffer(512)
            with _LAUNCH_LOCK:
                _hold_stacks(self._mod)
                if self._mod.variant == "racecheck":  # global memory is checked too: say where each array is
                    for i, a in packed.arrays:
                        self._mod.lib.emu_racecheck_track_global(
                            ctypes.c_void_p(a.ctypes.data), ctypes.c_size_t(a.nbytes),
                            f"argument {i} ('{self.params[i].name}')".encode())
                lib = self._mod.lib
                lib.emu_set_heap_limit(emulator_runtime.heap_limit())  # cudaLimitMallocHeapSize
                rc = lib.emu_launch(self._index, packed.argv.ctypes.data, cfg.ctypes.data, err, len(err))
                emulator_runtime.heap_launched(bool(lib.emu_heap_used()))
                n = self._mod.lib.emu_output_size()
                buf = ctypes.create_string_buffer(n + 1)
                self._mod.lib.emu_output_take(buf, n)
                out = buf.raw[:n].decode(errors="replace")
                if n:
                    emulator_runtime.printed()
                offset = self._mod.lib.emu_fault_location(where, len(where)) if rc == _E_FAULT else 0
                undefined = ctypes.create_string_buffer(1024)
                lib.emu_undefined_shuffle(undefined, len(undefined))
            if rc:
                if echo and out:
                    sys.stdout.write(out)
                message = err.value.decode(errors="replace")
                if rc == _E_INTERRUPTED:
                    raise KeyboardInterrupt(f"kernel '{self.name}' {message}")
                if rc == _E_FAULT and _LOCATION_MARK in message:
                    message = message.replace(_LOCATION_MARK, self._fault_location(offset, where.value.decode()))
                message = re.sub("\x01PC:([0-9a-f]+)\x01",  # racecheck's code addresses -> file:line
                                 lambda m: self._mod.source_line(int(m.group(1), 16)) or "an unknown line", message)
                raise _error_class(rc, message)(message)
            self._check_undefined_shuffles(undefined.value.decode(errors="replace"), packed)
        if echo and out:
            sys.stdout.write(out)

    def _check_undefined_shuffles(self, shuffle: str, packed: _Packed) -> None:
        """A shuffle that read a lane outside its mask gave that lane all-ones bits (runtime.cpp, warp_op): a NaN
        for a float, which arithmetic carries.  The launch is a KernelFault if such a NaN reached a floating-point
        argument array; a kernel that never uses the undefined value (CUDA's reduce6 sample) runs as on a GPU."""
        if not shuffle:
            return
        for i, array in packed.arrays:
            if array.dtype.kind not in "fc":
                continue
            words = array.reshape(-1).view(f"u{array.dtype.itemsize // (2 if array.dtype.kind == 'c' else 1)}")
            if (words == np.iinfo(words.dtype).max).any():
                raise KernelFault(f"{shuffle}; that undefined value (NaN here) reached argument {i} "
                                  f"('{self.params[i].name}') of kernel '{self.name}'")

    def _fault_location(self, offset: int, elsewhere: str) -> str:
        """' at file.cu:LINE' for a crash or an exit() call, from the faulting instruction's offset."""
        line = self._mod.source_line(offset)
        if line:
            return f" at {line}"
        if elsewhere:
            return f" inside {elsewhere} (the kernel's line that called it is unknown)"
        return " (source line unknown)"

    def _launch_checked(self, cfg: np.ndarray, packed: _Packed) -> None:
        """Run under several thread/block schedules from the same inputs; all must agree bit for bit."""
        originals = [a.copy() for _, a in packed.arrays]
        results = []
        for k, (label, order, seed) in enumerate(_SCHEDULES):
            for (_, a), o in zip(packed.arrays, originals):
                np.copyto(a, o)
            self._launch(cfg, packed, order, seed, echo=(k == 0))
            results.append([a.copy() for _, a in packed.arrays])
        for k in range(1, len(_SCHEDULES)):
            for (i, _), first, other in zip(packed.arrays, results[0], results[k]):
                diff = _differing(first, other)
                if diff is None:
                    continue
                count, index = diff
                for (_, a), r in zip(packed.arrays, results[0]):
                    np.copyto(a, r)
                raise RaceError(
                    f"kernel '{self.name}' gives different results under different thread schedules: argument {i} "
                    f"('{self.params[i].name}') differs between the {_SCHEDULES[0][0]} and {_SCHEDULES[k][0]} "
                    f"orders in {count} of {first.size} elements, first at index {index}: "
                    f"{first[index].item()!r} vs {other[index].item()!r}. Some thread reads memory that another thread "
                    "writes without a __syncthreads() in between (or the result depends on block order, or a thread "
                    "reads an asynchronous copy's destination before waiting for it: the forward order lands each "
                    "copy at its wait, the others as it is issued; racecheck=True names the line).")


def _write_build_log(module: _Module, log_stream) -> None:
    """The build's compiler messages to ``log_stream`` (nothing without one, or for a build from before the log was
    kept)."""
    log = module.product.parent / "build.log"
    if log_stream is not None and log.is_file():
        log_stream.write(log.read_text())


def _copy_globals(source: _Module, target: _Module) -> None:
    """Copy the bytes of every __constant__ and __device__ variable from one build of a source to another."""
    for name, raw in source.constants.items():
        if target.constants[name].flags.writeable:  # a const one holds its compiled bytes in every build
            target.constants[name][:] = raw


def _check_workers(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= _MAX_WORKERS:
        raise ValueError(f"{what} must be an int number of OS threads in 1..{_MAX_WORKERS}, got {value!r}")
    return int(value)


def _memcheck_default() -> bool:
    """Whether a launch that does not say checks every load (``memcheck=``): ``$MINILORA_EMU_MEMCHECK``."""
    env = os.environ.get("MINILORA_EMU_MEMCHECK", "").strip()
    if env not in ("", "0", "1"):
        raise ValueError(f"MINILORA_EMU_MEMCHECK must be 1 (check every load of a kernel against its arguments' "
                         f"fences) or 0, got {env!r}")
    return env == "1"


def default_workers() -> int:
    """How many OS threads run the blocks of a launch by default: ``$MINILORA_EMU_WORKERS`` if set,
    else the number of CPUs this process may use (at most 64).  Blocks run one per thread at a time,
    each block's CUDA threads as fibers of that OS thread."""
    env = os.environ.get("MINILORA_EMU_WORKERS", "").strip()
    if env:
        try:
            return _check_workers(int(env), "MINILORA_EMU_WORKERS")
        except ValueError:
            raise ValueError(f"MINILORA_EMU_WORKERS must be an int number of OS threads in 1..{_MAX_WORKERS}, "
                             f"got {env!r}") from None
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, _MAX_WORKERS))


def _ctrl_c_raises_keyboard_interrupt() -> bool:
    """Whether Ctrl-C should stop a launch: when this is Python's main thread and SIGINT has Python's
    default handler (a spinning kernel would never let that handler run).  A program that installed
    its own SIGINT handler keeps it; the launch is then not interrupted."""
    return (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)


def _differing(a: np.ndarray, b: np.ndarray):
    """(count, first index) of the elements whose bytes differ, or None.  NaN payloads count as equal bits."""
    if a.dtype.itemsize in (1, 2, 4, 8) and a.ndim:
        ua = a.view(f"u{a.dtype.itemsize}")
        ub = b.view(f"u{a.dtype.itemsize}")
        bad = ua != ub
    else:
        bad = np.frombuffer(a.tobytes(), np.uint8) != np.frombuffer(b.tobytes(), np.uint8)
        if not bad.any():
            return None
        return int(bad.sum()), tuple(np.unravel_index(int(np.argmax(bad)) // max(a.dtype.itemsize, 1), a.shape))
    if not bad.any():
        return None
    return int(bad.sum()), tuple(int(x) for x in np.unravel_index(int(np.argmax(bad)), a.shape))


# ------------------------------------------------------------------------------------------------
# Sanitized launches run in a child process, so a crash is an exception rather than a dead Python.
# ------------------------------------------------------------------------------------------------
_SANITIZER_TIMEOUT = 600.0  # seconds, when the launch gives no timeout=


def _sanitizer_env() -> dict:
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ("detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86:"
                           "detect_stack_use_after_return=0:symbolize=1:print_summary=1:color=never")
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:exitcode=87:color=never"
    env["MINILORA_EMU_PARENT"] = str(os.getpid())  # the runner exits if it was orphaned before it started
    return env


def _launch_in_child(kernel: RawKernel, cfg: np.ndarray, packed: _Packed) -> str:
    header = np.array([0x31554D45, kernel._index, *cfg], dtype=np.uint64)
    limit = int(cfg[10]) / 1e6 if cfg[10] else _SANITIZER_TIMEOUT  # the launch's timeout=, in microseconds
    args = dict(packed.arrays)
    scalars = dict(packed.scalars)
    with tempfile.TemporaryDirectory(prefix="minilora-emu-") as tmp:
        launch, result = os.path.join(tmp, "launch.bin"), os.path.join(tmp, "result.bin")
        with open(launch, "wb") as f:
            f.write(header.tobytes())
            f.write(np.uint64(len(kernel.params)).tobytes())
            first_of = {}  # (address, nbytes) -> first argument with that buffer
            for i in range(len(kernel.params)):
                if i in args:
                    data = args[i].reshape(-1).view(np.uint8)
                    key = (data.ctypes.data, data.size)
                    if key in first_of:  # the same array twice: one buffer in the child too
                        f.write(np.array([2, first_of[key]], np.uint64).tobytes())
                        continue
                    first_of[key] = i
                    f.write(np.array([1, data.size], np.uint64).tobytes())
                    f.write(data.tobytes())
                else:
                    f.write(np.array([0, len(scalars[i])], np.uint64).tobytes())
                    f.write(scalars[i])
            f.write(np.uint64(len(kernel._mod.constants)).tobytes())
            for raw in kernel._mod.constants.values():  # in table order (dicts keep insertion order)
                f.write(np.uint64(raw.size).tobytes())
                f.write(raw.tobytes())
            f.write(np.array([emulator_runtime.heap_limit(), emulator_runtime.deviceHeapInUse()], np.uint64).tobytes())
        try:
            res = subprocess.run([str(kernel._mod.product), launch, result], capture_output=True,
                                 env=_sanitizer_env(), timeout=limit)
        except subprocess.TimeoutExpired:
            raise KernelFault(f"kernel '{kernel.name}' did not finish within timeout={limit:g} s under the "
                              "sanitizer") from None
        out = res.stdout.decode(errors="replace")
        err = res.stderr.decode(errors="replace")
        regions = {int(m.group(2), 16): int(m.group(1)) for m in re.finditer(r"^EMU_ARG (\d+) (0x[0-9a-f]+) \d+$", err, re.M)}
        err = re.sub(r"^EMU_ARG .*\n", "", err, flags=re.M)
        heap = re.search(r"^EMU_HEAP (\d) (\d+)\n", err, re.M)  # the device heap's books after the launch
        if heap:
            emulator_runtime.heap_launched(heap.group(1) == "1")
            emulator_runtime.sanitizer_launch_holds(int(heap.group(2)) - emulator_runtime.deviceHeapInUse())
            err = err.replace(heap.group(0), "")
        shuffle = re.search(r"^EMU_UNDEFINED_SHUFFLE (.*)\n", err, re.M)  # (see RawKernel._check_undefined_shuffles)
        err = err.replace(shuffle.group(0), "") if shuffle else err
        pc = re.search(r"^EMU_FAULT_PC ([0-9a-f]+)\n", err, re.M)
        err = re.sub(r"^EMU_FAULT_PC .*\n", "", err, flags=re.M)
        if res.returncode - 70 in _ERRORS:
            at = err.find("EMU_ERROR")  # (after any sanitizer warning the child printed first)
            message = err[at:].split("\n", 1)[1].strip() if at >= 0 else err
            line = kernel._mod.source_line(int(pc.group(1), 16)) if pc else None
            message = message.replace(_LOCATION_MARK, f" at {line}" if line else " (source line unknown)")
            raise _error_class(res.returncode - 70, message)(message)
        if res.returncode != 0:
            sys.stdout.write(out)
            raise KernelFault(f"kernel '{kernel.name}': {_fault_headline(err)}{_fault_target(kernel, err, regions)} "
                              f"(found by the sanitizer, exit code {res.returncode}); report:\n{_trim_report(err)}")
        with open(result, "rb") as f:
            for i, a in packed.arrays:
                if first_of[(a.ctypes.data, a.nbytes)] == i:
                    flat = a.reshape(-1).view(np.uint8)
                    flat[:] = np.frombuffer(f.read(flat.size), np.uint8)
            for raw in kernel._mod.constants.values():  # __device__ globals the kernel wrote, in table order
                written = np.frombuffer(f.read(raw.size), np.uint8)
                if raw.flags.writeable:
                    raw[:] = written
    kernel._check_undefined_shuffles(shuffle.group(1) if shuffle else "", packed)
    return out


def _trim_report(report: str, limit: int = 6000) -> str:
    """The sanitizer's report without the shadow-memory dump and the emulator's own stack frames."""
    keep = []
    for ln in report.splitlines():
        if not ln.strip() or ln.startswith(("Shadow", "  Addressable", "  Partially", "  Heap", "  Freed",
                                             "  Stack", "  Global", "  Poisoned", "  Container", "  Array",
                                             "  Intra", "  ASan", "  Left", "  Right")):
            continue
        if re.match(r"^(=>)?\s*0x[0-9a-f]+:", ln):
            continue
        if re.match(r"^\s*#\d+ ", ln) and (str(EMU_DIR) in ln or "__emu::" in ln):
            continue
        keep.append(ln)
    text = "\n".join(keep).replace(_RENAMED_KERNEL, "")  # a renamed kernel (_rename_kernels) under its own name
    return text if len(text) <= limit else text[:limit] + "\n..."


def _fault_target(kernel: RawKernel, report: str, regions: dict) -> str:
    """Which memory the bad access was next to: a kernel argument or the block's shared memory."""
    m = re.search(r"(\d+) bytes to the (left|right) of (\d+)-byte region \[(0x[0-9a-f]+),", report)
    if not m:
        return ""
    n = int(m.group(1))
    if m.group(2) == "left":
        side = f"{n} bytes before the start"
    else:
        side = "just past the end" if n == 0 else f"{n} bytes past the end"
    index = regions.get(int(m.group(4), 16))
    if index is not None:
        p = kernel.params[index]
        return f", {side} of argument {index} ('{p.name}', {m.group(3)} bytes)"
    if "alloc_shared" in report:
        return f", {side} of this block's shared memory ({m.group(3)} bytes)"
    return ""


def _fault_headline(report: str) -> str:
    """One line saying what went wrong where, e.g. 'heap-buffer-overflow at buggy.cu:64'."""
    m = re.search(r"SUMMARY: AddressSanitizer: (\S+) (\S+?:\d+)", report)
    if m:
        access = re.search(r"^(READ|WRITE) of size (\d+)", report, re.M)
        what = f" ({access.group(1).lower()} of {access.group(2)} bytes)" if access else ""
        return f"{m.group(1)}{what} at {os.path.basename(m.group(2))}"
    m = re.search(r"^(\S+?:\d+):\d+: runtime error: (.*)$", report, re.M)
    if m:
        return f"{m.group(2)} at {os.path.basename(m.group(1))}"
    return "crash"


class RawModule:
    """A CUDA source with several kernels, as ``cupy.RawModule``: ``RawModule(code=src).get_function(name)``.

    ``path=`` reads the source from a .cu file (its name then appears in errors and sanitizer reports).
    ``name_expressions=["k<float, 128>", ...]`` instantiates template kernels, as in CuPy; each is then
    found by ``get_function("k<float, 128>")``.
    """

    def __init__(self, *, code: str | None = None, path: str | os.PathLike | None = None, options: tuple = (),
                 backend: str = "nvrtc", translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 name_expressions=None, jitify: bool = False, sanitize: bool = False):
        if (code is None) == (path is None):
            raise TypeError("Exactly one of `code` and `path` keyword arguments must be given.")
        _typed_argument("code", code, str)  # (path= is the emulator's: a .cu file, where CuPy's loads a cubin)
        _typed_argument("options", options, tuple)
        if isinstance(name_expressions, str) or not all(isinstance(e, str) for e in name_expressions or ()):
            raise TypeError(f"name_expressions must be a sequence of strings, got {name_expressions!r}")
        self.backend, self.jitify = _check_backend(backend, jitify)
        if name_expressions is not None and self.backend != "nvrtc":  # CuPy's refusal: nvcc gives no lowered names
            raise ValueError("only nvrtc supports retrieving the mangled names for the given name expressions")
        self.translate_cucomplex = bool(translate_cucomplex)
        self.name_expressions = tuple(name_expressions or ())
        self.enable_cooperative_groups = bool(enable_cooperative_groups)
        self.filename = str(Path(path).resolve()) if path is not None else None
        self.code = Path(path).read_text() if path is not None else code
        self.options, self.sanitize = options, sanitize
        self._mod: _Module | None = None

    def compile(self, log_stream=None) -> "RawModule":
        """Build (or fetch from the cache) now; ``log_stream`` receives the compiler's messages (RawKernel.compile)."""
        if self._mod is None:
            self._mod = _get_module(self.code, self.options, self.sanitize, self.filename,
                                    name_expressions=self.name_expressions)
        _write_build_log(self._mod, log_stream)
        return self

    @property
    def kernel_names(self) -> list[str]:
        return list(self.compile()._mod.kernels)

    def get_global(self, name: str) -> GlobalSymbol:
        """The file-scope ``__constant__`` variable `name` as a writable 1-D NumPy array of its elements: fill it
        before launching (``[:] = values``).  It is also CuPy's answer, a ``MemoryPointer`` to the symbol, so CuPy's
        ways of filling it run unedited: ``copy_from_host(x.ctypes.data_as(ctypes.c_void_p), x.nbytes)``,
        ``copy_from_device(x.data, n)``, ``emulator.ndarray(shape, dtype, memptr)[...] = x``
        (``minilora/emulator_memory.py``).  Until filled, an uninitialized constant holds 0xFF bytes (NaN as
        float), so a launch that forgot it shows NaN rather than zeros."""
        return self.compile()._mod.global_array(name)

    def get_function(self, name: str) -> RawKernel:
        self.compile()
        return RawKernel(self.code, name, self.options, self.backend, translate_cucomplex=self.translate_cucomplex,
                         sanitize=self.sanitize, filename=self.filename, jitify=self.jitify,
                         enable_cooperative_groups=self.enable_cooperative_groups, _module=self._mod,
                         _name_expressions=self.name_expressions)


# CuPy's ElementwiseKernel / ReductionKernel, generated as CUDA C and run through RawKernel above.
from .emulator_kernels import ElementwiseKernel, ReductionKernel  # noqa: E402  (they build on RawKernel)
# CuPy's streams and events: ``emulator.cuda`` stands where code says ``cupy.cuda``.
from . import emulator_streams as cuda  # noqa: E402
from .emulator_streams import Event, Stream, get_elapsed_time, stream_of  # noqa: E402
from .emulator_fence import FencedArguments, fence_shadow  # noqa: E402  (arrays fenced as a GPU's allocations)

from .emulator_fusion import Fusion, fuse  # noqa: E402  (cupy.fuse: CuPy's path for host arrays)

__all__ += ["ElementwiseKernel", "ReductionKernel", "cuda", "Stream", "Event", "get_elapsed_time", "ndarray",
            "fuse", "Fusion"]
