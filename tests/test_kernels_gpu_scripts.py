"""benchmarks/gpu_lora.py run end to end without a GPU: CuPy replaced by a NumPy stand-in, the kernels
launched on the emulator, torch on the CPU, tiny shapes.  The numbers mean nothing; what is tested is that
the one run a GPU session gets does not die on the script itself (every table is built and RESULTS.md
written).  A real GPU run is benchmarks/gpu_check.sh."""
import sys
import tempfile
import types
from pathlib import Path

import pytest

import background_runs

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"

FAKE_CUPY = """\
# A NumPy stand-in for the parts of CuPy that benchmarks/gpu_lora.py touches: a dry run only.
import time as _time
import types as _types
import numpy as _np

class ndarray(_np.ndarray):
    def get(self):
        return _np.asarray(self)

def _w(a):
    return _np.asarray(a).view(ndarray) if isinstance(a, _np.ndarray) else a

float32, int32, bfloat16 = _np.float32, _np.int32, None
__version__ = "fake"
def empty(shape, dtype=_np.float32): return _w(_np.empty(shape, dtype))
def zeros(shape, dtype=_np.float32): return _w(_np.zeros(shape, dtype))
def full(shape, v, dtype=None): return _w(_np.full(shape, v, dtype))
def asarray(a): return _w(_np.asarray(a))
def abs(a): return _w(_np.abs(a))

class _Rng:
    def __init__(self, seed): self.g = _np.random.default_rng(seed)
    def standard_normal(self, shape, dtype=_np.float64): return _w(self.g.standard_normal(shape, dtype=dtype))
    def integers(self, lo, hi, n): return _w(self.g.integers(lo, hi, n))
random = _types.SimpleNamespace(default_rng=_Rng)

class _Event:
    def record(self): self.t = _time.perf_counter()
    def synchronize(self): pass
class _Device:
    def synchronize(self): pass
runtime = _types.SimpleNamespace(getDeviceCount=lambda: 1, runtimeGetVersion=lambda: 0,
                                 getDeviceProperties=lambda i: {"name": b"fake GPU", "l2CacheSize": 1 << 20})
cuda = _types.SimpleNamespace(runtime=runtime, Event=_Event, Device=_Device,
                              get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3)
"""

# Runs gpu_lora.main with "cuda" mapped to the emulator (kernels) and to the CPU (torch), at tiny sizes.
DRIVER = """\
import sys
import types
sys.path[:0] = [{FAKE_DIR!r}, {BENCH!r}]  # the stand-in "cupy" first
import numpy as np, torch
from minilora import kernels
orig = kernels._resolve_device
kernels._resolve_device = lambda fn, device, first: orig(fn, "emu" if device == "cuda" else device, first)
_to = torch.nn.Module.to
torch.nn.Module.to = lambda self, *a, **k: _to(self, *[("cpu" if x == "cuda" else x) for x in a], **k)
_randn = torch.randn
torch.randn = lambda *a, **k: _randn(*a, **{{**k, "device": "cpu"}})
torch.cuda.is_available = lambda: True
import gpu_lora as g
g.M, g.K, g.N = 40, 36, 44
g.ADAMW_SIZES = (4000,); g.ADAMW_TENSORS = 4
g.RANKS = (8, 16)
g.bgmv_cases_orig = g.bgmv_cases
g.bgmv_cases = lambda cupy, rows, adapters, rank: g.bgmv_cases_orig(cupy, min(rows, 20), 3, rank)
g.main(sys.argv[1:])
"""


def dry_run():
    """(exit code, stdout, stderr, RESULTS.md, gpu_choice.json) of the script's dry run (None for a file it did not
    write): a background run (tests/background_runs.py), behind the session's others, on the core the main
    process leaves idle."""
    with tempfile.TemporaryDirectory(prefix="gpu-lora-dry-") as folder:
        folder = Path(folder)
        (folder / "cupy").mkdir()
        (folder / "cupy" / "__init__.py").write_text(FAKE_CUPY)
        (folder / "dry.py").write_text(DRIVER.format(FAKE_DIR=str(folder), BENCH=str(BENCH)))
        out, choice = folder / "RESULTS.md", folder / "gpu_choice.json"
        res = background_runs.run_process([sys.executable, str(folder / "dry.py"), "--quick", "--repeats", "1",
                                           "--warmup", "0", "--out", str(out), "--choice-out", str(choice)],
                                          timeout=600)
        written = [f.read_text() if f.is_file() else None for f in (out, choice)]
    return (res.returncode, res.stdout, res.stderr, *written)


def start_background_runs(items, runs):
    if background_runs.selected(items, __name__, "test_gpu_lora_runs_end_to_end_with_a_numpy_stand_in_for_cupy"):
        runs.submit("gpu_lora dry run", __name__, "dry_run")


def test_gpu_lora_runs_end_to_end_with_a_numpy_stand_in_for_cupy(tmp_path, background):
    pytest.importorskip("torch")
    background.submit("gpu_lora dry run", __name__, "dry_run")  # a no-op after start_background_runs
    returncode, stdout, stderr, text, choice_text = background.result("gpu_lora dry run")
    assert returncode == 0, stdout[-3000:] + stderr[-3000:]
    for title in ("## LoRA forward", "## LoRA forward + backward", "## BGMV", "## AdamW"):
        assert title in text, title
    for row in ("fused v6", "fused v7", "unfused", "base GEMM", "fused bf16 (mma.sync, lora_bf16.cu) v2",
                "fused, resident tables"):
        assert f"| {row}" in text, row
    assert "cuBLAS bf16 base GEMM (goal <= 1.35x)" in text and "cuBLAS bf16 base GEMMs (goal <= 1.35x)" in text
    for version in ("v1", "v2"):  # both tensor-core versions, forward and forward + backward
        assert text.count(f"| fused bf16 (mma.sync, lora_bf16.cu) {version}") == 2, version
    assert "| fused v8" in text and "fastest fused fp32 version" in text
    # the sweep's choice: in the format pick_version reads, one winner per pass for the rank measured (r = 16)
    from minilora import kernels
    choice = tmp_path / "gpu_choice.json"
    choice.write_text(choice_text)
    table = kernels._parse_choice(choice)
    assert set(table) == {"forward", "forward+backward"} and all(set(v) == {16} for v in table.values())
    assert "host µs per call" in text
    # the stand-in is no CuPy 14: the header says minilora's bf16 tensors are not available, plainly
    assert "minilora bfloat16 tensors: **not available** -- CuPy fake has no bfloat16" in text


def test_the_peaks_follow_the_lent_gpu(monkeypatch):
    """The "of peak" columns divide by the lent GPU's data-sheet numbers: an H100 SXM's HBM (3350 GB/s) is 30%
    slower than an H200's (4800), so H200 numbers on an H100 would understate its bandwidth use by a third."""
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_lora as g
    assert g.default_peaks("NVIDIA H100 80GB HBM3") == (67.0, 3350.0)
    assert g.default_peaks("NVIDIA H200") == (67.0, 4800.0)
    assert g.default_peaks("NVIDIA H100 PCIe") == (51.0, 2000.0)
    assert g.default_peaks("fake GPU") is None
    args = types.SimpleNamespace(peak_tflops=None, peak_gbs=None)
    assert "data sheet" in g.resolve_peaks(args, "NVIDIA H100 80GB HBM3") and args.peak_gbs == 3350.0
    args = types.SimpleNamespace(peak_tflops=60.0, peak_gbs=None)
    assert g.resolve_peaks(args, "NVIDIA H200") == "given" and (args.peak_tflops, args.peak_gbs) == (60.0, 4800.0)
