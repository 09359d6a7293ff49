"""STAND-IN for a GPU, round 3: what the one GPU run of benchmarks/gpu_check.sh must not trip over.

* benchmarks/gpu_train_step.py's sections -- the bf16 probe, the step table, "where the time goes" -- run
  here on the CPU (``--dry-run``) and on the CuPy 14 stand-in (tests/fake_cupy.py) as ``cuda``, each section
  in RESULTS.md as soon as it is measured, and a run stopped by the time bound keeps what it had.
* CuPy 14's bfloat16 as its sources say (the stand-in models it, tests/fake_cupy.py's docstring lists
  what and where from): no bfloat16 sort (Thrust's type dispatcher has none), a matmul with one output
  element summed in bfloat16 (``dot``'s ReductionKernel), batched bf16 matmul failing (cupy/cupy#10317).
  minilora's ops on ``cuda`` give cpu's numbers anyway.
"""
import importlib.util
import pathlib

import numpy as np
import pytest

import fake_cupy
import minilora as ml
from minilora.device import device as _device

BF16 = ml.bfloat16


def load_benchmark(name):
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_r3", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.fixture
def cuda14(monkeypatch):
    return fake_cupy.install(monkeypatch, version="14.0.0")


# ---- benchmarks/gpu_train_step.py ------------------------------------------------------------------
def sections(text):
    return [line for line in text.splitlines() if line.startswith("#")]


def test_train_step_dry_run_writes_every_section_in_order(tmp_path):
    bench, out = load_benchmark("gpu_train_step"), tmp_path / "RESULTS.md"
    out.write_text("# kept: what an earlier stage wrote\n")
    assert bench.main(["--dry-run", "--out", str(out)]) == 0
    text = out.read_text()
    assert sections(text) == [
        "# kept: what an earlier stage wrote", "## bf16 probe on cpu: what the array module does with bfloat16",
        "## LoRA training step on cpu: 0.00B parameters (d=64, 1 layers), seq 16 x batch 2, r=16, all-linear",
        "### where the time goes: minilora LoRA fp32 on cpu (one step, each op on its own; host clock (no device here))",
        "### where the time goes: minilora LoRA bf16 on cpu (one step, each op on its own; host clock (no device here))"]
    assert "|sum(dtype=float32) | float32, float32 accumulation (rounded once)|" in text
    assert "|sort / argsort | same bits as cpu|" in text and "fails" not in text
    for row in ("minilora LoRA fp32", "minilora LoRA bf16", "minilora full fine-tuning fp32"):
        assert f"| {row} | " in text
    assert text.count("|Python between ops (modules, autograd engine, optimizer bookkeeping) | ") == 2


def test_train_step_stopped_by_the_time_bound_keeps_what_it_measured(tmp_path, monkeypatch):
    """gpu_check.sh's `timeout` sends SIGTERM: the probe is already in the file, the table is written with
    the rounds done, and the script exits 124 as `timeout` would."""
    bench, out = load_benchmark("gpu_train_step"), tmp_path / "RESULTS.md"
    real, calls = bench.timed_step, []

    def stopped_on_the_fourth(*args):
        calls.append(1)
        if len(calls) == 4:
            bench._stop_on_sigterm(15, None)
        return real(*args)
    monkeypatch.setattr(bench, "timed_step", stopped_on_the_fourth)
    assert bench.main(["--dry-run", "--repeats", "3", "--out", str(out)]) == 124
    text = out.read_text()
    assert "## bf16 probe on cpu" in text and "all-linear (cut short by the time bound)" in text
    assert "stopped by signal 15 (the time bound)" in text and "where the time goes" not in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| minilora")}
    assert all(" - | - | - | not timed" not in rows[name] for name in rows)  # three rows timed in round one
