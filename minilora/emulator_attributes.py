"""A kernel's function attributes, as ``cupy.RawKernel.attributes`` reads them from CUDA's driver.

On a GPU each value comes from the compiled cubin (``cuFuncGetAttribute``).  The emulator compiles with g++, so
what only ptxas knows -- registers, static shared memory, the stack frame (local memory) -- comes from running
``nvcc -cubin --resource-usage`` on the same source where nvcc is on PATH (cached by content, like the
emulator's builds), and is -1 without it: CuPy's own answer for an attribute the driver cannot give, never a
made-up number.  What the source alone decides is known either way: ``__launch_bounds__``, the architecture
(``-arch=sm_XY``, default sm_90), the ``__constant__`` variables' bytes, ``-Xptxas --dlcm=ca``.

    registers per thread  ->  max_threads_per_block: the driver's limit, 64 K registers per block allocated
                              256 a warp, at most 1024 threads and the kernel's __launch_bounds__
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .native import digest, write_atomically

REGISTERS_PER_BLOCK = 64 * 1024  # sm_50 .. sm_90
REGISTER_ALLOCATION = 256  # registers are allocated a warp at a time, in units of 256
MAX_THREADS = 1024
UNKNOWN = -1  # CuPy's value for an attribute the driver does not report
SETTABLE_CARVEOUT = range(-1, 101)  # CU_SHAREDMEM_CARVEOUT_DEFAULT (-1), else a percentage of the unified L1

_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_USED = re.compile(r"Used (\d+) registers(?:.*?, (\d+) bytes smem)?")
_STACK = re.compile(r"(\d+) bytes stack frame")


def nvcc_path() -> str | None:
    return shutil.which("nvcc")


def _nvcc_options(options) -> list[str]:
    """The options nvcc takes as the emulator does (-D, -U, -I, -std=); GPU-only ones are nvcc's own anyway."""
    out, it = [], iter(options)
    for opt in it:
        if opt in ("-D", "-U", "-I"):
            out += [opt, next(it, "")]
        elif opt.startswith(("-D", "-U", "-I", "-std=", "--std=")):
            out.append(opt)
    return out


def _instantiations(name_expressions) -> str:
    """Host code taking each name expression's address: nvcc then instantiates those template kernels, as NVRTC's
    name expressions make it."""
    if not name_expressions:
        return ""
    refs = ", ".join(f"(const void*)&{e}" for e in name_expressions)
    return f"\nstatic const void* __minilora_attribute_instances[] = {{{refs}}};\n"


def _spelled(name: str) -> str:
    """A kernel's name as a name expression spells it, from its demangled signature: no return type, no
    parameters, no spaces, no integer literal suffixes ("void k<float, 128u>(float*)" -> "k<float,128>")."""
    name = re.sub(r"^void ", "", name.strip())
    depth = 0
    for i, ch in enumerate(name):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            name = name[:i]
            break
    name = re.sub(r"\b(\d+)(?:ull|ll|ul|u|l)\b", r"\1", name.replace(" ", ""), flags=re.I)
    return re.sub(r"\(bool\)0", "false", re.sub(r"\(bool\)1", "true", name))


def _demangled(names: list[str]) -> list[str]:
    mangled = [n for n in names if n.startswith("_Z")]
    if not mangled or shutil.which("c++filt") is None:
        return names
    res = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True)
    table = dict(zip(mangled, res.stdout.splitlines())) if res.returncode == 0 else {}
    return [table.get(n, n) for n in names]


def parse_resource_usage(report: str) -> dict[str, dict]:
    """ptxas's --resource-usage report -> {kernel (as a name expression spells it): {registers, shared, local}}."""
    found, current = {}, None
    for line in report.splitlines():
        m = _ENTRY.search(line)
        if m:
            current = m.group(1)
            found[current] = {"registers": UNKNOWN, "shared": 0, "local": 0}
            continue
        if current is None:
            continue
        m = _STACK.search(line)
        if m:
            found[current]["local"] = int(m.group(1))
        m = _USED.search(line)
        if m:
            found[current]["registers"] = int(m.group(1))
            found[current]["shared"] = int(m.group(2) or 0)
    return {_spelled(name): usage for name, usage in zip(_demangled(list(found)), found.values())}


def resource_usage(code: str, options, name_expressions, arch: int, include_dir: str | None,
                   cache: Path) -> dict[str, dict] | None:
    """Each kernel's registers, static shared bytes and stack frame from nvcc, or None where nvcc is not on PATH
    or does not compile the source (the emulator's stand-ins accept a little more than CUDA's headers)."""
    nvcc = nvcc_path()
    if nvcc is None:
        return None
    flags = [f"-arch=sm_{arch}", *_nvcc_options(options)] + (["-I", include_dir] if include_dir else [])
    source = code + _instantiations(name_expressions)
    stored = cache / f"attributes-{digest(source, *flags, os.path.realpath(nvcc))}.json"
    if stored.is_file():
        try:
            return json.loads(stored.read_text())
        except ValueError:
            pass
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernels.cu"
        path.write_text(source)
        res = subprocess.run([nvcc, "-cubin", "--resource-usage", *flags, "-o", os.devnull, str(path)],
                             capture_output=True, text=True)
    usage = parse_resource_usage(res.stdout + res.stderr) if res.returncode == 0 else {}
    cache.mkdir(parents=True, exist_ok=True)
    write_atomically(stored, json.dumps(usage))
    return usage


def max_threads_per_block(registers: int, bound: int | None) -> int:
    """The most threads a block may have: 1024, the kernel's __launch_bounds__, and what 64 K registers allow when
    each warp takes ``registers`` x 32 rounded up to 256 (unknown registers: the other two limits only)."""
    limit = MAX_THREADS if bound is None else min(MAX_THREADS, bound)
    if registers > 0:
        per_warp = -(-registers * 32 // REGISTER_ALLOCATION) * REGISTER_ALLOCATION
        limit = min(limit, REGISTERS_PER_BLOCK // per_warp * 32)
    return limit


def caches_globals_in_l1(options) -> int:
    """cache_mode_ca: 1 where ptxas was told -dlcm=ca (global loads cached in L1), else 0."""
    return int(any(re.search(r"-?-dlcm[= ]?ca\b", o) for o in options))
