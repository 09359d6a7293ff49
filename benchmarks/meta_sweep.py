"""Which public ops still compute on the meta device?  (round 22)

    python benchmarks/meta_sweep.py              # every public function and Tensor method it can call
    python benchmarks/meta_sweep.py --only cross cdist

A meta op should infer its result's shape, dtype and strides and touch nothing of size (minilora/ops/meta.py).
This sweep calls every public minilora function (``minilora.*``, ``nn.functional``, ``fft``, ``linalg``,
``special``) and Tensor method on meta tensors of 16 pages each, after finding on the CPU the first of a few
argument patterns the function takes, and reports each call that

* read or wrote its meta inputs, or a meta array made during the call, past their first page (``touched``):
  every meta array here has a mapping of its own, and ``mincore`` says which of its pages the OS had to back --
  an op's stand-in run (one element of each input) reads the first page only;
* allocated host memory of the inputs' size (``host``: tracemalloc's peak, which counts NumPy's allocations);
* disagrees with torch's meta result (shape, dtype, strides) or error type (``torch``).
"""
import argparse
import ctypes
import inspect
import mmap
import os
import sys
import tracemalloc
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import minilora as ml  # noqa: E402
ml_device = sys.modules["minilora.device"]  # (minilora.device is the function)

PAGE = mmap.PAGESIZE
SHAPE = (16, 32, 32)  # float32: 64 KiB, 16 pages
_LIBC = ctypes.CDLL(None, use_errno=True)

# names that change global state, read files or the network, or only wrap other calls
_SKIPPED = ("set_", "save", "load", "seed", "manual_", "compile", "use_deterministic", "cuda", "device", "thread",
            "hub", "jit", "enable", "disable", "no_grad", "grad", "inference", "from_", "register", "backward",
            "to_dlpack", "share_memory", "pin_memory", "numpy", "tolist", "item", "data_ptr", "storage", "__",
            "record_stream", "apply_", "map_", "retain", "sum_to_size", "print", "get_", "is_", "init_", "empty_cache")


# ---- every meta array in a mapping of its own, page-aligned: mincore then says what was touched ------------------
_made = []


def _own_mapping_place(self, nbytes):
    mapping = ml_device._UnwrittenMapping(-1, max(nbytes, 1), flags=self._FLAGS)
    _made.append(mapping)
    return mapping, 0


ml_device._UnwrittenPages._place = _own_mapping_place


def _resident_pages(mapping):
    """How many of ``mapping``'s pages the OS has backed (read or written)."""
    view = np.frombuffer(mapping, np.uint8)
    pages = -(-len(mapping) // PAGE)
    vec = (ctypes.c_ubyte * pages)()
    if _LIBC.mincore(ctypes.c_void_p(view.ctypes.data), ctypes.c_size_t(len(mapping)), vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return sum(v & 1 for v in vec)


# ---- inputs, and the argument patterns tried ---------------------------------------------------------------------
def _inputs(T, device):
    x = T.ones(*SHAPE, device=device)
    return {"x": x, "y": T.ones(*SHAPE, device=device), "z": T.ones(*SHAPE, device=device),
            "i": T.zeros(*SHAPE, dtype=T.int64, device=device), "b": T.ones(*SHAPE, dtype=T.bool, device=device),
            "v": T.ones(SHAPE[-1], device=device), "m": T.ones(*SHAPE[1:], device=device),
            "c": T.ones(*SHAPE, dtype=T.complex64, device=device)}


_PATTERNS = [("x",), ("x", "y"), ("x", 1), ("x", -1), ("x", "y", "z"), ("x", 2), ("x", "y", 1), ("x", (1, 2)),
             ("x", 1, "i"), ("x", "v"), ("m",), ("m", "m"), ("x", "i"), ("i",), ("b",), ("c",), ("x", 1, 2),
             ("x", 0.5), ("x", "y", 0.5), ("x", 1, 4), ("i", "x"), ("x", "m")]


def _ones(T, d, *shape, dtype=None):
    return T.ones(*shape, device=d, dtype=dtype or T.float32)


# calls the patterns above do not reach (arguments of their own), each over inputs of 16 pages or more
EXTRA = {
    "index of a transpose": lambda T, d: _ones(T, d, 64, 256).t()[T.zeros(3, 5, dtype=T.int64, device=d)],
    "index of a permuted view": lambda T, d: _ones(T, d, 16, 32, 32).permute(2, 0, 1)[:, T.zeros(3, dtype=T.int64,
                                                                                                    device=d)],
    "einsum transpose": lambda T, d: T.einsum("bij->bji", _ones(T, d, 16, 32, 32)),
    "einsum trace": lambda T, d: T.einsum("bii->b", _ones(T, d, 16, 32, 32)),
    "einsum diagonal": lambda T, d: T.einsum("bii->bi", _ones(T, d, 16, 32, 32)),
    "einsum sum": lambda T, d: T.einsum("bij->j", _ones(T, d, 16, 32, 32)),
    "einsum of three": lambda T, d: T.einsum("bij,bjk,bkl->bil", _ones(T, d, 4, 32, 32), _ones(T, d, 4, 32, 32),
                                             _ones(T, d, 4, 32, 32)),
    "einsum outer": lambda T, d: T.einsum("i,j->ij", _ones(T, d, 4096), _ones(T, d, 8)),
    "interpolate channels_last": lambda T, d: T.nn.functional.interpolate(
        _ones(T, d, 2, 8, 32, 32).contiguous(memory_format=T.channels_last), scale_factor=2, mode="bilinear"),
    "interpolate nearest channels_last": lambda T, d: T.nn.functional.interpolate(
        _ones(T, d, 2, 8, 32, 32).contiguous(memory_format=T.channels_last), scale_factor=2),
    "cross": lambda T, d: T.cross(_ones(T, d, 4096, 3), _ones(T, d, 4096, 3), dim=1),
    "linalg.cross": lambda T, d: T.linalg.cross(_ones(T, d, 3, 4096), _ones(T, d, 3, 1), dim=0),
    "unfold": lambda T, d: T.nn.functional.unfold(_ones(T, d, 2, 8, 32, 32), 3, padding=1),
    "fold": lambda T, d: T.nn.functional.fold(_ones(T, d, 2, 36, 1024), (32, 32), 3, padding=1),
    "cdist p=1": lambda T, d: T.cdist(_ones(T, d, 4, 64, 32), _ones(T, d, 4, 48, 32), p=1),
    "cdist": lambda T, d: T.cdist(_ones(T, d, 4, 64, 32), _ones(T, d, 4, 48, 32)),
    "Tensor.unfold": lambda T, d: _ones(T, d, 16, 1024).unfold(1, 8, 4).contiguous(),
    "fft.rfft of a transpose": lambda T, d: T.fft.rfft(_ones(T, d, 64, 256).t(), dim=0),
    "stft": lambda T, d: T.stft(_ones(T, d, 4, 4096), 256, return_complex=True,
                                window=_ones(T, d, 256)),
    "conv1d": lambda T, d: T.nn.functional.conv1d(_ones(T, d, 4, 16, 256), _ones(T, d, 8, 16, 3), padding=1),
    "conv3d": lambda T, d: T.nn.functional.conv3d(_ones(T, d, 2, 4, 16, 16, 16), _ones(T, d, 8, 4, 3, 3, 3)),
    "max_pool3d": lambda T, d: T.nn.functional.max_pool3d(_ones(T, d, 2, 4, 16, 16, 16), 2),
    "avg_pool3d": lambda T, d: T.nn.functional.avg_pool3d(_ones(T, d, 2, 4, 16, 16, 16), 2),
    "adaptive_avg_pool2d": lambda T, d: T.nn.functional.adaptive_avg_pool2d(_ones(T, d, 2, 8, 32, 32), (5, 7)),
    "pixel_shuffle": lambda T, d: T.nn.functional.pixel_shuffle(_ones(T, d, 2, 16, 32, 32), 2),
    "group_norm": lambda T, d: T.nn.functional.group_norm(_ones(T, d, 2, 8, 32, 32), 4),
    "instance_norm": lambda T, d: T.nn.functional.instance_norm(_ones(T, d, 2, 8, 32, 32)),
    "normalize": lambda T, d: T.nn.functional.normalize(_ones(T, d, 16, 32, 32), dim=-1),
    "cosine_similarity": lambda T, d: T.nn.functional.cosine_similarity(_ones(T, d, 16, 1024), _ones(T, d, 16, 1024)),
    "grid_sample": lambda T, d: T.nn.functional.grid_sample(_ones(T, d, 2, 8, 32, 32), _ones(T, d, 2, 16, 16, 2),
                                                            align_corners=False),
    "kl_div": lambda T, d: T.nn.functional.kl_div(_ones(T, d, 16, 1024), _ones(T, d, 16, 1024),
                                                  reduction="batchmean"),
    "tril": lambda T, d: T.tril(_ones(T, d, 16, 32, 32)),
    "kron": lambda T, d: T.kron(_ones(T, d, 64, 64), _ones(T, d, 2, 2)),
    "tensordot": lambda T, d: T.tensordot(_ones(T, d, 16, 32, 32), _ones(T, d, 32, 32, 8), dims=2),
    "diagonal copy": lambda T, d: T.diagonal(_ones(T, d, 16, 32, 32), dim1=1, dim2=2).contiguous(),
    "trace": lambda T, d: T.trace(_ones(T, d, 128, 128)),
    "where": lambda T, d: T.where(_ones(T, d, 16, 1024) > 0, _ones(T, d, 16, 1024), 0.0),
    "masked_fill": lambda T, d: _ones(T, d, 16, 1024).masked_fill(_ones(T, d, 1024, dtype=T.bool), 0.0),
    "sort": lambda T, d: T.sort(_ones(T, d, 16, 1024), dim=-1),
    "gather": lambda T, d: T.gather(_ones(T, d, 16, 1024), 1, T.zeros(16, 512, dtype=T.int64, device=d)),
    "logical_and": lambda T, d: T.logical_and(_ones(T, d, 16, 1024), _ones(T, d, 16, 1024)),
    "amax": lambda T, d: T.amax(_ones(T, d, 16, 1024)),
    "cumsum": lambda T, d: _ones(T, d, 16, 1024).cumsum(1),
    "take": lambda T, d: T.take(_ones(T, d, 16, 1024), T.zeros(4096, dtype=T.int64, device=d)),
}


def _args(pattern, inputs):
    return [inputs[p] if isinstance(p, str) else p for p in pattern]


def _functions():
    """(label, how to find the callable in a namespace) for every public function and Tensor method."""
    found = []
    for prefix, module in (("", ml), ("nn.functional.", ml.nn.functional), ("fft.", ml.fft), ("linalg.", ml.linalg),
                           ("special.", ml.special)):
        for name in sorted(dir(module)):
            value = getattr(module, name, None)
            if name.startswith("_") or inspect.isclass(value) or inspect.ismodule(value) or not callable(value):
                continue
            if any(s in name for s in _SKIPPED):
                continue
            found.append((prefix + name, prefix.rstrip(".").split(".") if prefix else [], name, False))
    for name in sorted(dir(ml.Tensor)):
        if name.startswith("_") or any(s in name for s in _SKIPPED) or not callable(getattr(ml.Tensor, name, None)):
            continue
        found.append(("Tensor." + name, [], name, True))
    return found


def _callable(T, path, name, method, first):
    if method:
        return getattr(first, name)
    module = T
    for part in path:
        module = getattr(module, part)
    return getattr(module, name)


def _call(T, device, label, path, name, method, pattern):
    inputs = _inputs(T, device)
    args = _args(pattern, inputs)
    f = _callable(T, path, name, method, args[0])
    return f(*(args[1:] if method else args)), inputs


def _described(out):
    outs = out if isinstance(out, (tuple, list)) else (out,)
    described = []
    for t in outs:
        if not hasattr(t, "shape") or not hasattr(t, "stride"):
            described.append(type(t).__name__)
            continue
        try:
            strides = tuple(t.stride())
        except Exception as exc:
            strides = type(exc).__name__
        described.append((tuple(t.shape), str(t.dtype).split(".")[-1], strides))
    return described


def sweep(only=None):
    import torch
    torch.ones(1, device="meta") * 2
    rows = []
    calls = [(label, pattern, lambda T, d, f=(label, path, name, method), p=pattern: _call(T, d, *f, p)[0])
             for label, path, name, method in _functions() if not only or any(o in label for o in only)
             for pattern in [_cpu_pattern(label, path, name, method)] if pattern is not None]
    calls += [(label, (), call) for label, call in EXTRA.items() if not only or any(o in label for o in only)]
    return [(label, pattern, problems(call, torch)) for label, pattern, call in calls]


def problems(call, torch):
    """What is wrong with ``call(minilora, "meta")``: pages it touched, host memory it took, torch's difference."""
    _made.clear()
    tracemalloc.start()
    try:
        ours = _described(call(ml, "meta"))
    except Exception as exc:
        ours = type(exc).__name__
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    touched = max((_resident_pages(m) for m in _made if len(m) >= 2 * PAGE), default=0)
    try:
        theirs = _described(call(torch, "meta"))
    except Exception as exc:
        theirs = type(exc).__name__
    found = []
    if touched > 1:
        found.append(f"touched {touched} pages")
    if peak > 10 * PAGE:  # (Python objects aside: one of the inputs would be 16)
        found.append(f"host {peak // 1024} KiB")
    if ours != theirs:
        found.append(f"torch {theirs} != ours {ours}")
    return found


def _cpu_pattern(label, path, name, method):
    """The first argument pattern the function takes on the CPU (None: none does)."""
    for pattern in _PATTERNS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _call(ml, "cpu", label, path, name, method, pattern)
            return pattern
        except Exception:
            continue
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="labels containing one of these")
    parser.add_argument("--all", action="store_true", help="print the calls without a problem too")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rows = sweep(args.only)
    bad = [r for r in rows if r[2]]
    for label, pattern, problems in rows:
        if problems or args.all:
            print(f"{label}{tuple(pattern)}: {'; '.join(problems) or 'ok'}")
    print(f"{len(rows)} calls, {len(bad)} with a problem")


if __name__ == "__main__":
    main()
