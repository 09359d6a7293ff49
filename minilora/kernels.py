"""The Python side of minilora's CUDA kernels: find the ``.cu`` sources, compile, check, launch.

The kernels themselves are CUDA C in the top-level ``kernels/`` folder (``lora_forward.cu``,
``lora_backward.cu``, ``adamw.cu``; each opens with its math and versions). This module runs them on

* ``cuda`` -- CuPy arrays, compiled by NVRTC through ``cupy.RawModule``;
* ``emu``  -- NumPy arrays, compiled by g++ through ``minilora.emulator.RawModule`` and run on the
  CPU, one fiber per CUDA thread. Same source, same launch configuration, same results.

Every function checks shapes, dtypes (float32) and contiguity before it launches anything and names
the argument that is wrong: a kernel sees only a raw pointer and would silently read garbage.

Public functions (the contract with ``minilora.ops.lora`` and ``minilora.optim``)::

    Y, U = lora_forward(X, W0, A, B, scale, bias=None, dropout_p=0.0, seed=0, device=...)
    Y, U = lora_forward_bf16(X_bf16, W0_bf16, A, B, scale, bias=None, device=..., version="v2")  # tensor cores
    dX, dA, dB = lora_backward(dY, X, W0, A, B, U, scale, dropout_p=0.0, seed=0, device=...)
    dX, dA, dB = lora_backward_bf16(dY_bf16, X_bf16, W0_bf16, A, B, U, scale, device=...)  # tensor cores
    adamw_step(params, grads, exp_avgs, exp_avg_sqs, lr=..., beta1=..., beta2=..., eps=...,
               weight_decay=..., step=..., device=...)
    bgmv(Y, X, A, B, ranks, scales, index, device=..., version=...)   # per-row adapters, Y in place

An op never calls these from its NumPy math: ``LoraLinear`` declares ``kernel_forward`` /
``kernel_backward``, and ``Function.apply`` runs those on ``emu``/``cuda`` when ``supports`` takes the
dtypes (or the op's own ``kernel_supports``: ``LoraLinear`` sends a bfloat16 base with float32 adapters to
``lora_forward_bf16`` / ``lora_backward_bf16``, as a ``.view(uint16)`` of its bfloat16 arrays); they hand
their arrays through ``contiguous`` first.

``version="v1" | ... | "v9"`` runs one numbered version of the LoRA kernels (the tests run all of
them); by default ``pick_version`` chooses by shape, rank and what the last GPU sweep measured.
Tile shapes come from ``kernels/lora_tiles.cuh`` (``tiles()``), the same file the kernels include.
``checking(...)`` turns on the debugging aids the tests use: NaN-poisoned outputs and, on ``emu``,
the race check and the sanitizer.
"""
import contextlib
import functools
import math
import re

import numpy as np

from .device import Device, xp_of
from .device import device as _device
from .dtypes import is_bfloat16

__all__ = ["lora_forward", "lora_forward_bf16", "lora_backward", "lora_backward_bf16", "adamw_step", "bgmv",
           "BGMV_VERSIONS", "BF16_VERSIONS", "pick_version", "version_choice", "supports", "contiguous", "tiles",
           "run_update", "AdamWTables", "checking", "kernel_dir", "source", "VERSIONS", "KERNEL_FILES"]

VERSIONS = ("v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9")
KERNEL_FILES = ("lora_forward.cu", "lora_backward.cu", "adamw.cu", "bgmv.cu", "lora_bf16.cu")
BGMV_VERSIONS = ("v1", "v2")
BF16_VERSIONS = ("v1", "v2")  # lora_bf16.cu's tensor-core GEMM: 2 static / 4 dynamic cp.async stages
# Tile shapes and block sizes are not written here: tiles() reads them from kernels/lora_tiles.cuh
# (and adamw.cu's #defines), so a kernel and its launch configuration cannot disagree.
_TARGET_BLOCKS = 264  # about two waves of blocks on a 132-SM H100/H200: sizes dA's split over M
_MIN_BLOCKS = 4 * 132  # at least 4 blocks per SM of a 132-SM H100/H200: sizes the split of N in v8's pass over dY
_SMEM_PAD = 4  # common.cuh's SMEM_PAD: extra floats per shared-memory tile row (v9's dynamic shared memory)


# ------------------------------------------------------------------------------------------------
# Finding and compiling the sources
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def kernel_dir():
    """The folder holding the .cu files (found once, by the emulator module: one place for the rule)."""
    from .emulator import KERNELS_DIR
    if not (KERNELS_DIR / "lora_forward.cu").is_file():
        raise FileNotFoundError(f"cannot find the CUDA sources (lora_forward.cu) in {KERNELS_DIR}; "
                                "is minilora installed with its package data?")
    return KERNELS_DIR


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def source(filename):
    """The text of ``kernels/<filename>`` with its local ``#include "..."`` files pasted in.

    Pasting (with ``#line`` markers, so errors still name the right file and line) makes the source
    self-contained: NVRTC needs no include path, and the emulator's cache key -- a hash of the text --
    changes whenever a header does.
    """
    folder = kernel_dir()
    path = folder / filename
    out = [f'#line 1 "{path}"']
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        match = _INCLUDE.match(line)
        if match and (folder / match.group(1)).is_file():
            header = folder / match.group(1)
            out += [f'#line 1 "{header}"', header.read_text(), f'#line {lineno + 1} "{path}"']
        else:
            out.append(line)
    return "\n".join(out) + "\n"


_MODULES = {}  # (device, file, sanitize) -> (modification times of the sources, compiled module)


def _module(dev, filename, sanitize=False):
    """The compiled module, rebuilt when a source changed (a learner editing a .cu in a notebook)."""
    folder = kernel_dir()
    stamp = tuple((folder / name).stat().st_mtime_ns for name in (filename, "common.cuh", "lora_tiles.cuh")
                  if (folder / name).is_file())
    key = (dev.name, filename, sanitize)
    if key not in _MODULES or _MODULES[key][0] != stamp:
        code = source(filename)
        if dev.name == "cuda":
            import cupy
            module = cupy.RawModule(code=code)
        else:
            from . import emulator
            module = emulator.RawModule(code=code, sanitize=sanitize)
        _MODULES[key] = (stamp, module)
    return _MODULES[key][1]


# ------------------------------------------------------------------------------------------------
# Tile shapes: read from kernels/lora_tiles.cuh, the one place they are written
# ------------------------------------------------------------------------------------------------
_CONSTANT = re.compile(r"^\s*constexpr\s+int\s+(\w+)\s*=\s*(\d+)\s*;", re.M)
_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)\s+(\d+)\b", re.M)
_STRUCT = re.compile(r"\bstruct\s+(\w+)\s*(?::\s*(\w+)\s*)?\{(.*?)\};", re.S)
_FIELDS = re.compile(r"static\s+constexpr\s+(?:int|bool)\s+([^;]*);")
_ALIAS = re.compile(r"\busing\s+(\w+)\s*=\s*(?:\w+::)*(\w+)\s*;")


class _Tiles:
    """What lora_tiles.cuh says: its int constants, and per kernel configuration (``lora_fwd_y_v5``)
    its fields (``BM``, ``BN``, ...) with what it inherits, and which configurations are aliases."""

    def __init__(self, text):
        text = re.sub(r"//[^\n]*", "", text)  # comments may mention any of the forms
        self.constants = {name: int(value) for name, value in _CONSTANT.findall(text)}
        self.aliases = dict(_ALIAS.findall(text))
        own = {}
        for name, base, body in _STRUCT.findall(text):
            fields = {}
            for declaration in _FIELDS.findall(body):
                for item in declaration.split(","):
                    field, value = (part.strip() for part in item.split("="))
                    fields[field] = {"true": True, "false": False}.get(value, None)
                    if fields[field] is None:
                        fields[field] = int(value)
            own[name] = (base or None, fields)
        self.configs = {name: self._resolve(own, name) for name in own}

    @staticmethod
    def _resolve(own, name):
        base, fields = own[name]
        return {**(_Tiles._resolve(own, base) if base else {}), **fields}

    def kernel(self, name):
        """The kernel that runs for configuration ``name``: itself, or what it is an alias of."""
        while name in self.aliases:
            name = self.aliases[name]
        return name

    def shape(self, kernel, version):
        """(kernel name to launch, its tile fields) of ``kernel`` (e.g. ``"lora_fwd_y"``) in ``version``."""
        if version == "v2":
            t = self.constants["V2_TILE"]
            return f"{kernel}_v2", {"BM": t, "BN": t, "BK": t, "RC": t}
        name = self.kernel(f"{kernel}_{version}")
        return name, self.configs[name]


@functools.lru_cache(maxsize=4)
def _tiles_of(stamp):
    return _Tiles((kernel_dir() / "lora_tiles.cuh").read_text())


def tiles():
    """The tile shapes in kernels/lora_tiles.cuh (read again when the file changes)."""
    return _tiles_of((kernel_dir() / "lora_tiles.cuh").stat().st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _adamw_define(name):
    """A ``#define`` of adamw.cu: ADAMW_THREADS (threads per block), ADAMW_CHUNK (elements per block)."""
    return int(dict(_DEFINE.findall((kernel_dir() / "adamw.cu").read_text()))[name])


# ------------------------------------------------------------------------------------------------
# Debugging aids for tests: poisoned outputs, race check, sanitizer
# ------------------------------------------------------------------------------------------------
class _Checks:
    poison = False
    check_races = False
    sanitize = False


@contextlib.contextmanager
def checking(poison=True, check_races=False, sanitize=False):
    """Within this block, every output and scratch array starts as NaN (``poison``: an element a
    kernel forgets to write shows up), and on ``emu`` each launch runs under several thread orders
    (``check_races``) and/or AddressSanitizer in a child process (``sanitize``)."""
    saved = (_Checks.poison, _Checks.check_races, _Checks.sanitize)
    _Checks.poison, _Checks.check_races, _Checks.sanitize = poison, check_races, sanitize
    try:
        yield
    finally:
        _Checks.poison, _Checks.check_races, _Checks.sanitize = saved


def _empty(xp, shape):
    if _Checks.poison:
        return xp.full(shape, np.nan, dtype=np.float32)
    return xp.empty(shape, dtype=np.float32)


def _lora_grads(xp, M, N, K, r, need_dx, need_dA, need_dB):
    """The float32 arrays a LoRA backward writes: dX [M, K], dA [r, K], dB [N, r] (None where not
    needed); zeros when M, N or K is 0 (nothing to sum over), else uninitialised (or NaN: poison)."""
    empty = M == 0 or N == 0 or K == 0
    make = (lambda shape: xp.zeros(shape, dtype=np.float32)) if empty else (lambda shape: _empty(xp, shape))
    return (make((M, K)) if need_dx else None, make((r, K)) if need_dA else None,
            make((N, r)) if need_dB else None)


def _launch(dev, filename, name, grid, block, args, shared_mem=0):
    """Launch kernel ``name`` of ``kernels/<filename>``; ``shared_mem``: bytes of dynamic shared memory."""
    grid, block = tuple(grid), (block,) if isinstance(block, int) else tuple(block)  # CuPy wants tuples
    emulated = dev.name == "emu"
    kernel = _module(dev, filename, _Checks.sanitize).get_function(name) if emulated \
        else _module(dev, filename).get_function(name)
    if shared_mem > 48 * 1024 and kernel.max_dynamic_shared_size_bytes < shared_mem:
        kernel.max_dynamic_shared_size_bytes = shared_mem  # over 48 KB is an opt-in per kernel (sm_80+)
    if emulated:
        kernel(grid, block, args, shared_mem=shared_mem, check_races=_Checks.check_races)
    else:
        kernel(grid, block, args, shared_mem=shared_mem)


# ------------------------------------------------------------------------------------------------
# Argument checks
# ------------------------------------------------------------------------------------------------
def supports(*dtypes):
    """Whether the kernels handle arrays of these dtypes (float32 only; for anything else
    ``Function.apply`` runs the op's NumPy math instead)."""
    return all(np.dtype(dtype) == np.float32 for dtype in dtypes)


def contiguous(*arrays):
    """The arrays as C-contiguous arrays (copies only where needed): a kernel sees a flat pointer,
    so an op hands its views (``W.T``, slices) through this before launching."""
    return tuple(a if a.flags.c_contiguous else xp_of(a).ascontiguousarray(a) for a in arrays)


def _resolve_device(fn, device, first):
    if device is None:
        device = "emu" if isinstance(first, np.ndarray) else "cuda"
    dev = device if isinstance(device, Device) else _device(device)
    if not dev.uses_kernels:
        raise ValueError(f"{fn}: device '{dev.name}' does not run kernels; use 'emu' or 'cuda' "
                         "(on 'cpu' the ops compute with NumPy)")
    return dev


def _check(fn, dev, name, a, shape):
    """Raise unless ``a`` is a C-contiguous float32 array of ``shape`` living on ``dev``."""
    xp = dev.xp
    if not isinstance(a, xp.ndarray):
        raise TypeError(f"{fn}: {name} must be a {xp.__name__} array for device '{dev.name}', "
                        f"got {type(a).__module__}.{type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{fn}: {name} must be float32 (the kernels are float32 only), got {a.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{fn}: {name} must be C-contiguous (a kernel sees only a flat pointer); "
                         f"pass {xp.__name__}.ascontiguousarray({name})")


def _check_matrix(fn, dev, name, a):
    if getattr(a, "ndim", None) != 2:
        raise ValueError(f"{fn}: {name} must be a 2-D array, got shape {getattr(a, 'shape', None)}")
    _check(fn, dev, name, a, a.shape)
    if max(a.shape) >= 2**31:
        raise ValueError(f"{fn}: {name} has a dimension >= 2^31 ({a.shape}); the kernels index with int32")
    return a.shape


def _lora_shapes(fn, dev, X, W0, A, B):
    M, K = _check_matrix(fn, dev, "X", X)
    N = _check_matrix(fn, dev, "W0", W0)[0]
    r = _check_matrix(fn, dev, "A", A)[0]
    _check(fn, dev, "W0", W0, (N, K))
    _check(fn, dev, "A", A, (r, K))
    _check(fn, dev, "B", B, (N, r))
    if r == 0:
        raise ValueError(f"{fn}: the LoRA rank r (rows of A) must be at least 1")
    return M, N, K, r


def _dropout_args(fn, dropout_p, seed):
    """(seed32, threshold, 1/(1-p)) as the kernels take them; threshold 0 means no dropout."""
    p = float(dropout_p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{fn}: dropout_p must be in [0, 1), got {dropout_p}")
    threshold = min(int(p * 2.0**32), 2**32 - 1)  # as lora_dropout_mask computes it
    return np.uint32(int(seed) & 0xFFFFFFFF), np.uint32(threshold), np.float32(1.0 / (1.0 - p))


def _version(fn, version, M, N, r, backward=False):
    if version is None:
        return pick_version(M, N, r, backward=backward)
    if version not in VERSIONS:
        raise ValueError(f"{fn}: version must be one of {VERSIONS} or None, got {version!r}")
    return version


# Which version is fastest on big problems is a measurement, not a rule: benchmarks/gpu_check.sh's sweep
# (benchmarks/gpu_lora.py) writes the winners per pass and rank into this file, committed with the results.
# Read from a checkout only (a wheel does not ship benchmarks/); without it the choice is v5.
_FALLBACK = "v5"  # the fastest version measured on a GPU before the sweep existed (benchmarks/RESULTS.md)
_PASSES = ("forward", "forward+backward")


def _choice_path():
    return kernel_dir().parent / "benchmarks" / "gpu_choice.json"


class _Choice:
    """The parsed choice file, re-read when it changes: ``table`` {pass: {rank: version}} or None, ``table_128``
    the same among the versions with 128 x 128 tiles (None when the file has none), and ``note``, one line
    saying where the big-problem choice comes from (or why the file was not used)."""
    stamp, table, table_128, note = None, None, None, ""


def _parse_choice(path, key="big", versions=VERSIONS):
    """{pass: {rank: version}} from the file's "choices" -> ``key`` ("big", or "big_128_tiles": the fastest of the
    versions with 128 x 128 tiles, for problems too small for v9's), or raise ValueError saying what is wrong."""
    import json
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read it as JSON ({type(exc).__name__}: {exc})") from None
    big = data.get("choices", {}).get(key) if isinstance(data, dict) and isinstance(data.get("choices"), dict) \
        else None
    if not isinstance(big, dict) or not big:
        raise ValueError(f'no "choices": {{"{key}": {{...}}}} object in it')
    table = {}
    for pass_, by_rank in big.items():
        if pass_ not in _PASSES or not isinstance(by_rank, dict) or not by_rank:
            raise ValueError(f'"choices.{key}" must map {" and/or ".join(_PASSES)} to {{rank: version}}, '
                             f'got {pass_!r}')
        table[pass_] = {}
        for rank, version in by_rank.items():
            if not str(rank).isdigit() or int(rank) < 1 or version not in versions:
                raise ValueError(f'"choices.{key}.{pass_}": {rank!r}: {version!r} is not a rank >= 1 '
                                 f'and one of {versions}')
            table[pass_][int(rank)] = version
    return table


# v9's 256 x 128 tiles run one block per SM: a problem with fewer of them than a 132-SM H100/H200 has SMs
# leaves SMs idle for the whole GEMM, and takes the fastest version with 128 x 128 tiles instead.
_WAVE = 132
_TILES_128 = tuple(v for v in VERSIONS if v not in ("v1", "v2", "v9"))


def version_choice():
    """``(table, note)``: the measured choice for big problems ({"forward" / "forward+backward": {rank:
    version}}, or None when there is none) and one line saying where it comes from. A file that exists but
    cannot be used is reported once (a RuntimeWarning naming the file and the problem) and ignored."""
    path = _choice_path()
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = "missing"
    if stamp != _Choice.stamp:
        _Choice.stamp = stamp
        if stamp == "missing":
            _Choice.table = None
            _Choice.note = f"{path} not found: {_FALLBACK} (the fastest version measured before the sweep)"
        else:
            try:
                _Choice.table = _parse_choice(path)
                _Choice.note = f"measured: {path}"
            except ValueError as exc:
                import warnings
                _Choice.table = _Choice.table_128 = None
                _Choice.note = f"{path} ignored ({exc}): {_FALLBACK}"
                warnings.warn(f"minilora.kernels.pick_version: {_Choice.note}; run benchmarks/gpu_check.sh on a GPU "
                              "to write it again", RuntimeWarning, stacklevel=3)
            else:
                try:  # optional: files written before v9 have no such table
                    _Choice.table_128 = _parse_choice(path, "big_128_tiles", _TILES_128)
                except ValueError:
                    _Choice.table_128 = None
        if stamp == "missing":
            _Choice.table_128 = None
    return _Choice.table, _Choice.note


def pick_version(M, N, r=None, backward=False):
    """The production choice of kernel version for an [M, K] x [K, N] LoRA GEMM of rank ``r``.

    Small problems -- fewer than ~32 tiles of 128 x 128, where most of a GPU's 100+ multiprocessors
    would sit idle under big tiles -- go to v2's 16 x 16 tiles. Big problems take the version the last GPU
    sweep measured fastest for this pass (``backward``: the forward + backward table) and rank -- the
    smallest measured rank >= r, else the largest -- from benchmarks/gpu_choice.json (``version_choice``),
    and v5 when there is no such file (v5 was the fastest of v2-v5 measured on an H200: benchmarks/RESULTS.md).
    v9 (256 x 128 tiles, one block per SM) is taken only where its tiles fill a 132-SM GPU once; below that
    the sweep's fastest version with 128 x 128 tiles ("big_128_tiles" in the file), or v7 without one."""
    big_tiles = math.ceil(M / 128) * math.ceil(N / 128)
    if big_tiles < 32:
        return "v2"
    table, _ = version_choice()
    pass_ = "forward+backward" if backward else "forward"
    choice = _by_rank((table or {}).get(pass_), r)
    if choice is None:
        return _FALLBACK
    if choice == "v9" and math.ceil(M / 256) * math.ceil(N / 128) < _WAVE:
        return _by_rank((_Choice.table_128 or {}).get(pass_), r) or "v7"
    return choice


def _by_rank(by_rank, r):
    """The entry of {rank: version} for rank r: the smallest measured rank >= r, else the largest (r=None: 16)."""
    if not by_rank:
        return None
    ranks = sorted(by_rank)
    wanted = r if r is not None else 16
    return by_rank[next((k for k in ranks if k >= wanted), ranks[-1])]


def _cdiv(a, b):
    return -(-a // b)


# ------------------------------------------------------------------------------------------------
# LoRA forward
# ------------------------------------------------------------------------------------------------
def lora_forward(X, W0, A, B, scale, bias=None, dropout_p=0.0, seed=0, device=None, version=None):
    """``Y = X W0^T + bias + scale * dropout(X) A^T B^T`` and ``U = dropout(X) A^T`` (kept for backward).

    X [M, K], W0 [N, K], A [r, K], B [N, r], bias [N] or None; all float32, C-contiguous, on
    ``device`` ('emu' with NumPy arrays, 'cuda' with CuPy arrays). Returns ``(Y [M, N], U [M, r])``.
    """
    fn = "lora_forward"
    dev = _resolve_device(fn, device, X)
    M, N, K, r = _lora_shapes(fn, dev, X, W0, A, B)
    if bias is not None:
        _check(fn, dev, "bias", bias, (N,))
    seed32, threshold, keep_scale = _dropout_args(fn, dropout_p, seed)
    v = _version(fn, version, M, N, r)
    xp = dev.xp
    Y, U = _empty(xp, (M, N)), _empty(xp, (M, r))
    if M == 0 or N == 0:
        U[...] = 0
        return Y, U
    i32, f32 = np.int32, np.float32
    bias_arg = Y if bias is None else bias  # never read when has_bias == 0
    u_args = (X, A, U, i32(M), i32(K), i32(r), seed32, threshold, keep_scale)
    y_args = (X, W0, U, B, bias_arg, i32(bias is not None), Y, i32(M), i32(N), i32(K), i32(r), f32(scale))
    if v == "v1":
        b = tiles().constants["V1_BLOCK"]
        _launch(dev, "lora_forward.cu", "lora_fwd_u_v1", (_cdiv(r, b), _cdiv(M, b)), (b, b), u_args)
        _launch(dev, "lora_forward.cu", "lora_fwd_y_v1", (_cdiv(N, b), _cdiv(M, b)), (b, b), y_args)
    else:
        threads = tiles().constants["THREADS"]
        u_kernel, u = tiles().shape("lora_fwd_u", v)
        y_kernel, y = tiles().shape("lora_fwd_y", v)
        _launch(dev, "lora_forward.cu", u_kernel, (_cdiv(r, u["BN"]), _cdiv(M, u["BM"])), threads, u_args)
        smem = _phases_smem(y)
        _launch(dev, "lora_forward.cu", y_kernel, (_cdiv(N, y["BN"]), _cdiv(M, y["BM"])), threads,
                y_args + ((i32(smem),) if smem else ()), smem)
    return Y, U


def _phases_smem(cfg):
    """Bytes of dynamic shared memory a v9 GEMM kernel takes (0 for the earlier ones, whose shared memory is
    static): STAGES k-major tiles of both operands, as common.cuh's phases_smem_bytes lays them out. v9's
    configurations are the ones with a grouped block order (GROUP_M); the kernel traps if given less."""
    if "GROUP_M" not in cfg:
        return 0
    return 4 * cfg["STAGES"] * cfg["BK"] * (cfg["BM"] + cfg["BN"] + 2 * _SMEM_PAD)


# ------------------------------------------------------------------------------------------------
# LoRA forward in bf16 on tensor cores (kernels/lora_bf16.cu)
# ------------------------------------------------------------------------------------------------
def _bf16_bits(a):
    """A bfloat16 array (ml_dtypes on NumPy, CuPy >= 14) as the uint16 bit patterns the kernels read: a view."""
    dtype = getattr(a, "dtype", None)
    return a.view(np.uint16) if dtype is not None and is_bfloat16(dtype) else a


def _check_bf16(fn, dev, name, a, shape):
    """Raise unless ``a`` is a C-contiguous uint16 array (bf16 bit patterns) of ``shape`` on ``dev``."""
    xp = dev.xp
    if not isinstance(a, xp.ndarray) or a.dtype != np.uint16:
        raise TypeError(f"{fn}: {name} must be a {xp.__name__} uint16 array holding bfloat16 bit patterns "
                        f"(or a bfloat16 array), got {type(a).__name__} {getattr(a, 'dtype', '')}")
    if getattr(a, "ndim", None) != 2 or (shape is not None and tuple(a.shape) != tuple(shape)):
        raise ValueError(f"{fn}: {name} must have shape {shape if shape is not None else '[rows, cols]'}, "
                         f"got {tuple(getattr(a, 'shape', ()))}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{fn}: {name} must be C-contiguous; pass {xp.__name__}.ascontiguousarray({name})")
    if max(a.shape) >= 2**31:
        raise ValueError(f"{fn}: {name} has a dimension >= 2^31 ({a.shape}); the kernels index with int32")
    return a.shape


def _bf16_version(fn, version):
    if version not in BF16_VERSIONS:
        raise ValueError(f"{fn}: version must be one of {BF16_VERSIONS}, got {version!r}")
    return version


def _bf16_gemm(version, backward):
    """(kernel name, its tile fields, dynamic shared-memory bytes) of lora_bf16.cu's tensor-core GEMM tile: Y's
    (``backward=False``) or dX's. v1 has static shared memory (0 here); v2's is sized as lora_bf16.cu lays it
    out: STAGES buffers of both operand tiles (k-contiguous rows of BK + 8 bf16; the backward's W0 tile BK
    rows of BN + 8), or the epilogue's two [BM | BN][RC + 1] float tables if larger. The kernel traps when
    given less than it needs."""
    base = "lora_bf16_bwd_dx" if backward else "lora_bf16_fwd_y"
    cfg = tiles().configs[tiles().kernel(f"lora_bf16_{'dx' if backward else 'y'}_{version}")]
    if version == "v1":
        return base, cfg, 0
    bm, bn, bk, rc = cfg["BM"], cfg["BN"], cfg["BK"], cfg["RC"]
    stage = 2 * bm * (bk + 8) + (2 * bk * (bn + 8) if backward else 2 * bn * (bk + 8))
    return f"{base}_{version}", cfg, max(cfg["STAGES"] * stage, 4 * (bm + bn) * (rc + 1))


def lora_forward_bf16(X, W0, A, B, scale, bias=None, device=None, version="v2"):
    """``Y = X W0^T + bias + scale * X A^T B^T`` with X and W0 in bf16 on the tensor cores, fp32 elsewhere.

    X [M, K] and W0 [N, K]: bfloat16 arrays (``minilora.bfloat16``: ml_dtypes on NumPy, CuPy >= 14), or their
    uint16 bit patterns (from torch: ``t.to(torch.bfloat16).view(torch.int16).numpy().view(numpy.uint16)``;
    on ``cuda`` a CuPy uint16 array: what CuPy < 14, which has no bfloat16, can hold). A [r, K], B [N, r],
    bias [N] or None: float32 (the adapter's master weights). Returns ``(Y [M, N], U [M, r])``, float32;
    ``U = X A^T`` is what the backward needs. No dropout: the kernel has none (use lora_forward).
    ``version``: "v1" (2 cp.async stages, static shared memory) or "v2" (4 stages, 80 KB of dynamic shared
    memory: sm_80 or later).
    """
    fn = "lora_forward_bf16"
    X, W0 = _bf16_bits(X), _bf16_bits(W0)
    dev = _resolve_device(fn, device, X)
    version = _bf16_version(fn, version)
    M, K = _check_bf16(fn, dev, "X", X, None)
    N = _check_bf16(fn, dev, "W0", W0, None)[0]
    _check_bf16(fn, dev, "W0", W0, (N, K))
    r = _check_matrix(fn, dev, "A", A)[0]
    _check(fn, dev, "A", A, (r, K))
    _check(fn, dev, "B", B, (N, r))
    if r == 0:
        raise ValueError(f"{fn}: the LoRA rank r (rows of A) must be at least 1")
    if bias is not None:
        _check(fn, dev, "bias", bias, (N,))
    xp = dev.xp
    Y, U = _empty(xp, (M, N)), _empty(xp, (M, r))
    if M == 0 or N == 0:
        U[...] = 0
        return Y, U
    i32 = np.int32
    rows = tiles().constants["BF16_U_ROWS"]
    _launch(dev, "lora_bf16.cu", "lora_bf16_fwd_u", (_cdiv(M, rows),), 32 * rows, (X, A, U, i32(M), i32(K), i32(r)))
    name, cfg, smem = _bf16_gemm(version, backward=False)
    args = (X, W0, U, B, Y if bias is None else bias, i32(bias is not None), Y, i32(M), i32(N), i32(K), i32(r),
            np.float32(scale))
    _launch(dev, "lora_bf16.cu", name, (_cdiv(N, cfg["BN"]), _cdiv(M, cfg["BM"])), tiles().constants["THREADS"],
            args + ((i32(smem),) if smem else ()), *((smem,) if smem else ()))
    return Y, U


def lora_backward_bf16(dY, X, W0, A, B, U, scale, need_dx=True, need_dA=True, need_dB=True, device=None,
                       split_m=None, version="v2"):
    """Gradients of ``lora_forward_bf16`` for X, A and B (none for the frozen W0), kernels/lora_bf16.cu.

    dY [M, N], X [M, K], W0 [N, K]: bfloat16 bit patterns (uint16) -- dY as a bf16 model's autograd hands
    it down; A [r, K], B [N, r], U [M, r] (from the forward): float32. Returns ``(dX, dA, dB)``, float32
    (dA and dB are the fp32 master weights' gradients; dX is float32 -- round it to bf16 if the layer
    below wants bf16), with None for each gradient not asked for. ``dX = dY W0`` runs on the tensor
    cores; the rank-r products (``V = s dY B``, ``V A``, ``dA = V^T X``, ``dB = s dY^T U``) in fp32.
    ``split_m`` as in ``lora_backward``; ``version`` as in ``lora_forward_bf16`` (dX's GEMM). No dropout
    (the bf16 forward has none).
    """
    fn = "lora_backward_bf16"
    dY, X, W0 = _bf16_bits(dY), _bf16_bits(X), _bf16_bits(W0)
    dev = _resolve_device(fn, device, dY)
    version = _bf16_version(fn, version)
    M, K = _check_bf16(fn, dev, "X", X, None)
    N = _check_bf16(fn, dev, "W0", W0, None)[0]
    _check_bf16(fn, dev, "W0", W0, (N, K))
    _check_bf16(fn, dev, "dY", dY, (M, N))
    r = _check_matrix(fn, dev, "A", A)[0]
    _check(fn, dev, "A", A, (r, K))
    _check(fn, dev, "B", B, (N, r))
    _check(fn, dev, "U", U, (M, r))
    if r == 0:
        raise ValueError(f"{fn}: the LoRA rank r (rows of A) must be at least 1")
    xp = dev.xp
    dX, dA, dB = _lora_grads(xp, M, N, K, r, need_dx, need_dA, need_dB)
    if M == 0 or N == 0 or K == 0:  # nothing to sum over: the gradients are zero (or empty)
        return dX, dA, dB
    i32 = np.int32

    def launch(name, grid, block, args, *shared_mem):  # the reduction of partial sums is lora_backward.cu's
        _launch(dev, "lora_bf16.cu" if name.startswith("lora_bf16") else "lora_backward.cu", name, grid, block, args,
                *shared_mem)

    V = _empty(xp, (M, r))  # scratch (s dY B): the pass over dY writes it even when only dB is wanted
    _dy_pass(launch, "lora_bf16_bwd_dy", tiles().configs[tiles().kernel("lora_bf16_dy_v1")], dY, B, U, V, dB,
             need_dB, M, N, r, scale)
    threads = tiles().constants["THREADS"]
    if need_dx:
        name, cfg, smem = _bf16_gemm(version, backward=True)
        launch(name, (_cdiv(K, cfg["BN"]), _cdiv(M, cfg["BM"])), threads,
               (dY, W0, V, A, dX, i32(M), i32(N), i32(K), i32(r)) + ((i32(smem),) if smem else ()),
               *((smem,) if smem else ()))
    if need_dA:
        cfg = tiles().configs["lora_bf16_da_v1"]
        # one column of K per thread and 2-byte loads: it needs many threads in flight -- 4 blocks per SM
        splits, rows = _m_splits(fn, split_m, _cdiv(r, cfg["RC"]) * _cdiv(K, threads), M, cfg["BM"], _MIN_BLOCKS)
        partial_A = dA if splits == 1 else _empty(xp, (splits, r, K))
        launch("lora_bf16_bwd_da", (_cdiv(K, threads), _cdiv(r, cfg["RC"]), splits), threads,
               (V, X, partial_A, i32(M), i32(K), i32(r), i32(rows)))
        if splits > 1:
            _reduce(launch, partial_A, dA, splits, r * K)
    return dX, dA, dB


# ------------------------------------------------------------------------------------------------
# LoRA backward
# ------------------------------------------------------------------------------------------------
def lora_backward(dY, X, W0, A, B, U, scale, dropout_p=0.0, seed=0, need_dx=True, need_dA=True,
                  need_dB=True, device=None, version=None, split_m=None):
    """Gradients of ``lora_forward`` for X, A and B (never for the frozen W0).

    dY [M, N] is the gradient of Y; X, W0, A, B, U as in (and from) the forward, with the same
    ``scale``, ``dropout_p`` and ``seed`` (the dropout mask is regenerated, not stored). Returns
    ``(dX [M, K], dA [r, K], dB [N, r])`` with None for each gradient not asked for.

    ``split_m``: how many row slices dA's split-M reduction uses (default: enough blocks to fill a
    GPU); results are bit-identical from run to run for any fixed choice.
    """
    fn = "lora_backward"
    dev = _resolve_device(fn, device, dY)
    M, N, K, r = _lora_shapes(fn, dev, X, W0, A, B)
    _check(fn, dev, "dY", dY, (M, N))
    _check(fn, dev, "U", U, (M, r))
    seed32, threshold, keep_scale = _dropout_args(fn, dropout_p, seed)
    v = _version(fn, version, M, K, r, backward=True)
    xp = dev.xp
    dX, dA, dB = _lora_grads(xp, M, N, K, r, need_dx, need_dA, need_dB)
    if M == 0 or N == 0 or K == 0:  # nothing to sum over: the gradients are zero (or empty)
        return dX, dA, dB
    i32, f32 = np.int32, np.float32
    s = f32(scale)
    mask = (seed32, threshold, keep_scale)

    def launch(name, grid, block, args, shared_mem=0):
        _launch(dev, "lora_backward.cu", name, grid, block, args, shared_mem)

    V = _empty(xp, (M, r)) if (need_dx or need_dA or (need_dB and v != "v1")) else None

    if v == "v1":
        b = tiles().constants["V1_BLOCK"]
        if V is not None:
            launch("lora_bwd_v_v1", (_cdiv(r, b), _cdiv(M, b)), (b, b), (dY, B, V, i32(M), i32(N), i32(r), s))
        if need_dB:
            launch("lora_bwd_db_v1", (_cdiv(r, b), _cdiv(N, b)), (b, b), (dY, U, dB, i32(M), i32(N), i32(r), s))
        if need_dx:
            launch("lora_bwd_dx_v1", (_cdiv(K, b), _cdiv(M, b)), (b, b),
                   (dY, W0, V, A, dX, i32(M), i32(N), i32(K), i32(r), *mask))
        if need_dA:
            launch("lora_bwd_da_v1", (_cdiv(K, b), _cdiv(r, b)), (b, b),
                   (V, X, dA, i32(M), i32(K), i32(r), *mask))
        return dX, dA, dB

    threads = tiles().constants["THREADS"]
    # 1. One pass over dY: V, and dB's per-row-block partial sums (2. reduced right after).
    dy_kernel, dy = tiles().shape("lora_bwd_dy", v)
    _dy_pass(launch, dy_kernel, dy, dY, B, U, V, dB, need_dB, M, N, r, s)
    # 3. dX = dY W0 + mask * (V A)
    if need_dx:
        dx_kernel, dx = tiles().shape("lora_bwd_dx", v)
        smem = _phases_smem(dx)
        launch(dx_kernel, (_cdiv(K, dx["BN"]), _cdiv(M, dx["BM"])), threads,
               (dY, W0, V, A, dX, i32(M), i32(N), i32(K), i32(r), *mask) + ((i32(smem),) if smem else ()), smem)
    # 4. dA = V^T dropout(X), split over M (5. reduced after).
    if need_dA:
        da_kernel, da = tiles().shape("lora_bwd_da", v)
        bm, bn, bk = da["BM"], da["BN"], da["BK"]
        splits, rows = _m_splits(fn, split_m, _cdiv(r, bm) * _cdiv(K, bn), M, bk)
        partial_A = dA if splits == 1 else _empty(xp, (splits, r, K))
        launch(da_kernel, (_cdiv(K, bn), _cdiv(r, bm), splits), threads,
               (V, X, partial_A, i32(M), i32(K), i32(r), i32(rows), *mask))
        if splits > 1:
            _reduce(launch, partial_A, dA, splits, r * K)
    return dX, dA, dB


def _m_splits(fn, split_m, tiles_per_split, M, step, target=_TARGET_BLOCKS):
    """(slices, rows per slice) of dA's split over M: ``split_m`` slices, or by default about ``target`` blocks
    (never slices under 256 rows); rows per slice a multiple of the kernel's k-step ``step``."""
    splits = split_m if split_m is not None else max(1, min(target // tiles_per_split, _cdiv(M, 256)))
    if not isinstance(splits, (int, np.integer)) or splits < 1:
        raise ValueError(f"{fn}: split_m must be a positive int, got {split_m!r}")
    rows = _cdiv(_cdiv(M, int(splits)), step) * step
    return _cdiv(M, rows), rows


def _dy_pass(launch, kernel, cfg, dY, B, U, V, dB, need_dB, M, N, r, s):
    """Launch 1 of the backward (and 2, the reductions): ``V = s dY B`` and ``dB = s dY^T U`` in one pass over
    dY. Configurations with ``SPLIT_N`` (v8, bf16) also split N over grid z -- as many slices as it takes to
    launch ``_MIN_BLOCKS`` blocks, each slice a whole number of BN-wide tiles -- and V's partial sums are
    reduced like dB's."""
    xp = xp_of(dY)
    i32 = np.int32
    rank_blocks, row_blocks = _cdiv(r, cfg["RC"]), _cdiv(M, cfg["BM"])
    n_slices, n_slice = 1, N
    if cfg.get("SPLIT_N", False):
        n_slices = max(1, min(_cdiv(_MIN_BLOCKS, rank_blocks * row_blocks), _cdiv(N, cfg["BN"])))
        n_slice = _cdiv(_cdiv(N, n_slices), cfg["BN"]) * cfg["BN"]
        n_slices = _cdiv(N, n_slice)
    partial_V = V if n_slices == 1 else _empty(xp, (n_slices, M, r))
    partial_B = partial_V  # a placeholder pointer when dB is not wanted (write_db = 0)
    if need_dB:
        partial_B = dB if row_blocks == 1 else _empty(xp, (row_blocks, N, r))
    args = (dY, B, U, partial_V, partial_B, i32(need_dB), i32(M), i32(N), i32(r), np.float32(s))
    launch(kernel, (rank_blocks, row_blocks, n_slices), tiles().constants["THREADS"],
           args + ((i32(n_slice),) if cfg.get("SPLIT_N", False) else ()))
    if n_slices > 1:
        _reduce(launch, partial_V, V, n_slices, M * r)
    if need_dB and row_blocks > 1:
        _reduce(launch, partial_B, dB, row_blocks, N * r)


def _reduce(launch, partials, out, slices, size):
    """The second pass of a split reduction: ``out = partials.sum(axis=0)``, in a fixed order."""
    threads = tiles().constants["THREADS"]
    launch("lora_reduce_partials", (_cdiv(size, threads),), threads,
           (partials, out, np.int32(slices), np.int64(size)))


# ------------------------------------------------------------------------------------------------
# AdamW
# ------------------------------------------------------------------------------------------------
def adamw_step(params, grads, exp_avgs, exp_avg_sqs, *, lr, beta1, beta2, eps, weight_decay, step,
               device=None, tables=None):
    """One ``torch.optim.AdamW`` step for every tensor, in place, in ONE kernel launch.

    ``params``, ``grads``, ``exp_avgs``, ``exp_avg_sqs``: equally long sequences of float32
    C-contiguous arrays, matching shapes tensor by tensor. The hyperparameters are numbers, or
    sequences with one value per tensor (parameter groups with different ``lr``; parameters at
    different ``step`` counts). ``step`` counts from 1.

    ``tables``: an ``AdamWTables`` kept from step to step (an optimizer keeps one). It holds the
    launch's pointer and size tables on the device and rebuilds them only when the parameter set
    changes, so a step costs a cache-key check, the per-step values (gradient addresses,
    hyperparameters) in one small copy, and the launch. Without it every call builds the tables anew.
    """
    fn = "adamw_step"
    lists = {"params": list(params), "grads": list(grads), "exp_avgs": list(exp_avgs),
             "exp_avg_sqs": list(exp_avg_sqs)}
    T = len(lists["params"])
    for name, items in lists.items():
        if len(items) != T:
            raise ValueError(f"{fn}: {name} has {len(items)} arrays but params has {T}")
    if T == 0:
        return
    dev = _resolve_device(fn, device, lists["params"][0])
    hyper = _adamw_hyper(fn, T, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, step=step)
    if dev.name == "emu" and (_Checks.check_races or _Checks.sanitize):
        # The emulator's checks see only memory passed as kernel arguments: the flat-buffer path, built per call.
        for t, p in enumerate(lists["params"]):
            for name, items in lists.items():
                _check(fn, dev, f"{name}[{t}]", items[t], p.shape)
        blocks, args, copy_back = _adamw_arguments(dev, lists, hyper)
        _launch(dev, "adamw.cu", "adamw_multi_tensor", (blocks,), _adamw_define("ADAMW_THREADS"), args)
        copy_back()
        return
    tables = AdamWTables() if tables is None else tables
    blocks, args = tables.arguments(fn, dev, lists, hyper)
    if blocks:
        _launch(dev, "adamw.cu", "adamw_multi_tensor", (blocks,), _adamw_define("ADAMW_THREADS"), args)


class AdamWTables:
    """adamw_multi_tensor's launch arguments for one parameter set, resident on the device.

    What stays put while a model trains: which arrays are the parameters and their moments (so
    their addresses), their sizes, and the block -> (tensor, chunk) table. Built once, on the device,
    and again only when the parameter set changes: a tensor added or removed, or any of them a new
    array object (``load_state_dict``, ``.to()``). What changes every step: the gradients (backward
    makes new arrays; ``zero_grad`` drops them) and the step counts in the hyperparameters. Those
    travel in ONE host-to-device copy of ``64 T`` bytes into a buffer built with the tables.

    The cache key is the identity (``id``) of every parameter, exp_avg and exp_avg_sq array. The
    tables hold references to those arrays, so no other array can take one of their ids while the key
    is kept. ``rebuilds`` counts the builds (the tests check it).
    """

    def __init__(self):
        self.rebuilds = 0
        self._key = None

    def arguments(self, fn, dev, lists, hyper):
        """``(blocks, kernel arguments)`` for this step; rebuilds the tables first when the key changed."""
        p, g, m, v = (lists[k] for k in ("params", "grads", "exp_avgs", "exp_avg_sqs"))
        key = (dev.name, tuple(map(id, p)), tuple(map(id, m)), tuple(map(id, v)))
        if key != self._key:
            self._build(fn, dev, p, m, v, key)
        # The gradients: new arrays every step after a backward, so checked and addressed every step (and
        # not held here: the tables must not keep a model's gradients alive after zero_grad).
        self._set_grads(fn, dev, g)
        self._host_hyper[...] = hyper
        if self._device is not self._host:  # cuda: one copy of the per-step values
            self._device.set(self._host)
        return self._layout.blocks, self._args

    def _build(self, fn, dev, p, m, v, key):
        for t, a in enumerate(p):
            _check(fn, dev, f"params[{t}]", a, a.shape)
            _check(fn, dev, f"exp_avgs[{t}]", m[t], a.shape)
            _check(fn, dev, f"exp_avg_sqs[{t}]", v[t], a.shape)
        T = len(p)
        self._layout = _AdamWLayout(dev, tuple(a.size for a in p))
        self._shapes = [a.shape for a in p]
        # One buffer: addresses [4, T] uint64 (param, grad, exp_avg, exp_avg_sq), then hyper [T, 8] float32.
        self._host = np.zeros(64 * T, dtype=np.uint8)
        self._host_addresses = self._host[:32 * T].view(np.uint64).reshape(4, T)
        self._host_hyper = self._host[32 * T:].view(np.float32).reshape(T, 8)
        for row, arrays in ((0, p), (2, m), (3, v)):
            self._host_addresses[row] = [_address(a) for a in arrays]
        self._device = self._host if dev.name == "emu" else dev.xp.asarray(self._host)
        addresses, hyper = self._device[:32 * T].view(np.uint64), self._device[32 * T:].view(np.float32)
        # flat_p/g/m/v are unused with use_addresses = 1; any float32 array will do as the placeholder.
        placeholder = p[0]
        self._args = (addresses, placeholder, placeholder, placeholder, placeholder, self._layout.offsets,
                      self._layout.chunks, hyper, np.int32(T), np.int32(1))
        self._held = (p, m, v)  # keeps the key's ids from being reused by other arrays
        self._key = key
        self.rebuilds += 1

    def _set_grads(self, fn, dev, grads):
        array_type, f32 = dev.xp.ndarray, np.dtype(np.float32)
        for t, (g, shape) in enumerate(zip(grads, self._shapes)):
            if not (isinstance(g, array_type) and g.dtype == f32 and g.shape == shape and g.flags.c_contiguous):
                _check(fn, dev, f"grads[{t}]", g, shape)  # raises, naming what is wrong
        self._host_addresses[1] = [_address(g) for g in grads]


def run_update(optimizer, todo):
    """An optimizer's update of ``todo`` (its ``(parameter, state, group)`` triples): ``kernel_update``
    -- one launch of its fused kernel -- where that applies, else ``update`` (the NumPy/CuPy math).

    It applies on a device that launches kernels (``emu``, ``cuda``), for float32 parameters that are
    C-contiguous (a kernel updates them in place through flat pointers; a copy would not be the
    parameter) and that ``optimizer.kernel_applies(todo)`` accepts (AdamW's rule, say, but not Adam's
    L2 penalty). ``optim.Adam`` is the example, as ``ops.LoraLinear`` is for ``Function.apply``.
    """
    params = [p._array for p, _, _ in todo]
    if (todo and todo[0][0].device.uses_kernels and supports(*(a.dtype for a in params))
            and all(a.flags.c_contiguous for a in params) and optimizer.kernel_applies(todo)):
        return optimizer.kernel_update(todo)
    return optimizer.update(todo)


def _adamw_arguments(dev, lists, hyper):
    """``(blocks, kernel arguments, copy_back)`` for one launch of adamw_multi_tensor (header of adamw.cu)."""
    p, g, m, v = (lists[k] for k in ("params", "grads", "exp_avgs", "exp_avg_sqs"))
    layout = _adamw_layout(dev, tuple(a.size for a in p))
    xp = dev.xp
    # The emulator's race check and sanitizer see only memory passed as kernel arguments (the sanitizer
    # even runs the launch in another process), so there the tensors travel in four flat buffers.
    flat = dev.name == "emu" and (_Checks.check_races or _Checks.sanitize)
    if flat:
        buffers = [np.concatenate([a.reshape(-1) for a in arrays]) for arrays in (p, g, m, v)]
        addresses = np.zeros(1, dtype=np.uint64)
    else:
        buffers = [p[0], g[0], m[0], v[0]]  # unused placeholders (use_addresses = 1)
        addresses = np.array([_address(a) for arrays in (p, g, m, v) for a in arrays], dtype=np.uint64)
    args = (xp.asarray(addresses), *buffers, layout.offsets, layout.chunks, xp.asarray(hyper),
            np.int32(len(p)), np.int32(not flat))

    def copy_back():  # flat buffers only: the updated values go back into the caller's arrays
        if flat:
            bounds = layout.host_offsets
            for arrays, buffer in ((p, buffers[0]), (m, buffers[2]), (v, buffers[3])):
                for t, a in enumerate(arrays):
                    a.reshape(-1)[...] = buffer[bounds[t]:bounds[t + 1]]
    return layout.blocks, args, copy_back


class _AdamWLayout:
    """Which block updates which chunk of which tensor, for tensors of the given sizes: built once
    per set of sizes and kept on the device (an optimizer passes the same shapes every step)."""

    def __init__(self, dev, sizes):
        sizes = np.array(sizes, dtype=np.int64)
        self.host_offsets = np.concatenate([[0], np.cumsum(sizes)])
        # Array operations, not a Python loop: a 100M-parameter model has ~25,000 chunks.
        counts = -(-sizes // _adamw_define("ADAMW_CHUNK"))
        first_block = np.cumsum(counts) - counts
        tensor_of_block = np.repeat(np.arange(len(sizes)), counts)
        chunk_of_block = np.arange(counts.sum()) - np.repeat(first_block, counts)
        self.blocks = int(counts.sum())
        chunks = np.stack([tensor_of_block, chunk_of_block], axis=1).astype(np.int32)
        self.offsets, self.chunks = dev.xp.asarray(self.host_offsets), dev.xp.asarray(chunks.reshape(-1))


@functools.lru_cache(maxsize=8)
def _adamw_layout(dev, sizes):
    return _AdamWLayout(dev, sizes)


def _address(a):
    """Device address of an array's first element (CuPy: ``data.ptr``; NumPy: ``ctypes.data``)."""
    return a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else a.data.ptr


def _adamw_hyper(fn, T, *, lr, beta1, beta2, eps, weight_decay, step):
    """The [T, 8] float32 table adamw.cu reads (struct AdamWHyper), computed in float64."""
    def per_tensor(name, value):
        values = np.broadcast_to(np.asarray(value, dtype=np.float64), (T,)) if np.ndim(value) == 0 \
            else np.asarray(value, dtype=np.float64)
        if values.shape != (T,):
            raise ValueError(f"{fn}: {name} must be a number or one value per tensor ({T}), got {len(values)}")
        return values
    lr, beta1, beta2 = per_tensor("lr", lr), per_tensor("beta1", beta1), per_tensor("beta2", beta2)
    eps, wd, step = per_tensor("eps", eps), per_tensor("weight_decay", weight_decay), per_tensor("step", step)
    if (step < 1).any():
        raise ValueError(f"{fn}: step counts from 1 (the first update), got {step.min():g}")
    if ((beta1 < 0) | (beta1 >= 1) | (beta2 < 0) | (beta2 >= 1)).any():
        raise ValueError(f"{fn}: betas must be in [0, 1)")
    table = np.zeros((T, 8), dtype=np.float64)
    table[:, 0] = 1.0 - lr * wd
    table[:, 1] = 1.0 - beta1
    table[:, 2] = beta2
    table[:, 3] = 1.0 - beta2
    table[:, 4] = lr / (1.0 - beta1 ** step)
    table[:, 5] = np.sqrt(1.0 - beta2 ** step)
    table[:, 6] = eps
    return table.astype(np.float32)


# ------------------------------------------------------------------------------------------------
# BGMV: each row through its own adapter (multi-adapter serving)
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _bgmv_define(name):
    """A ``#define`` of bgmv.cu (BGMV_V1_BLOCK, BGMV_THREADS, BGMV_MAX_RANK)."""
    return int(dict(_DEFINE.findall((kernel_dir() / "bgmv.cu").read_text()))[name])


def _check_ints(fn, dev, name, a, shape):
    if not isinstance(a, dev.xp.ndarray) or a.dtype != np.int32 or tuple(a.shape) != tuple(shape) \
            or not a.flags.c_contiguous:
        raise TypeError(f"{fn}: {name} must be a C-contiguous int32 {dev.xp.__name__} array of shape "
                        f"{tuple(shape)}, got {type(a).__name__} {getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}")


def bgmv(Y, X, A, B, ranks, scales, index, device=None, version="v2"):
    """``Y[m] += scales[a] * B[a, :, :r_a] @ (A[a, :r_a] @ X[m])`` with ``a = index[m]`` (kernels/bgmv.cu).

    Y [M, N] (updated in place: it holds the base output), X [M, K], A [L, R, K] and B [L, N, R]
    (the L adapters stacked, each padded to the largest rank R), ranks [L] int32 (each <= R),
    scales [L] float32, index [M] int32 (-1: the row has no adapter). Returns Y.
    """
    fn = "bgmv"
    dev = _resolve_device(fn, device, X)
    M, K = _check_matrix(fn, dev, "X", X)
    N = _check_matrix(fn, dev, "Y", Y)[1]
    _check(fn, dev, "Y", Y, (M, N))
    if getattr(A, "ndim", None) != 3:
        raise ValueError(f"{fn}: A must be [adapters, rank, in_features], got shape {getattr(A, 'shape', None)}")
    L, R = A.shape[0], A.shape[1]
    _check(fn, dev, "A", A, (L, R, K))
    _check(fn, dev, "B", B, (L, N, R))
    _check(fn, dev, "scales", scales, (L,))
    _check_ints(fn, dev, "ranks", ranks, (L,))
    _check_ints(fn, dev, "index", index, (M,))
    host_ranks, host_index = (a.get() if dev.name == "cuda" else a for a in (ranks, index))
    if L and (host_ranks.min() < 1 or host_ranks.max() > R):
        raise ValueError(f"{fn}: every rank must be in [1, {R}] (the stacked rank), got {host_ranks.tolist()}")
    if M and (host_index.min() < -1 or host_index.max() >= L):
        raise ValueError(f"{fn}: index must name an adapter in [0, {L}) or be -1 (no adapter)")
    if version not in BGMV_VERSIONS:
        raise ValueError(f"{fn}: version must be one of {BGMV_VERSIONS}, got {version!r}")
    if version == "v2" and R > _bgmv_define("BGMV_MAX_RANK"):
        raise ValueError(f"{fn}: v2 handles ranks up to {_bgmv_define('BGMV_MAX_RANK')}, got {R}; use version='v1'")
    if M == 0 or N == 0 or R == 0 or L == 0:
        return Y
    U = _empty(dev.xp, (M, R))
    i32 = np.int32
    shrink = (X, A, ranks, index, U, i32(M), i32(K), i32(R))
    expand = (U, B, ranks, scales, index, Y, i32(M), i32(N), i32(R))
    if version == "v1":
        b = _bgmv_define("BGMV_V1_BLOCK")
        _launch(dev, "bgmv.cu", "bgmv_shrink_v1", (_cdiv(R, b), _cdiv(M, b)), (b, b), shrink)
        _launch(dev, "bgmv.cu", "bgmv_expand_v1", (_cdiv(N, b), _cdiv(M, b)), (b, b), expand)
    else:
        threads = _bgmv_define("BGMV_THREADS")
        _launch(dev, "bgmv.cu", "bgmv_shrink_v2", (M,), threads, shrink)
        _launch(dev, "bgmv.cu", "bgmv_expand_v2", (_cdiv(N, threads), M), threads, expand)
    return Y
