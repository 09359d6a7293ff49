"""Round 24's faults: CuPy's out-of-memory error is torch's on ``cuda``; a student copy of the exercises appears
whole; ``Trainer.save_model`` swaps its files in as one unit; every file minilora writes is written atomically."""
import os
import pickle

import numpy as np
import pytest

import fake_cupy
import minilora as ml


# -- CuPy's out-of-memory error is torch.cuda.OutOfMemoryError ----------------------------------------------------
@pytest.fixture
def small_gpu(monkeypatch):
    """The stand-in CuPy with a memory pool that refuses any array over 4 KiB."""
    cupy = fake_cupy.install(monkeypatch)
    monkeypatch.setattr(ml.device("cuda"), "uses_kernels", False)
    cupy.get_default_memory_pool().set_limit(size=4096)
    return cupy


def _refused(call):
    with pytest.raises(ml.cuda.OutOfMemoryError) as caught:
        call()
    return caught.value


def test_an_op_out_of_memory_is_torchs_error(small_gpu):
    x = ml.ones(20, 20, device="cuda", dtype=ml.float64)  # 3200 bytes: fits
    error = _refused(lambda: x.reshape(400, 1) @ x.reshape(1, 400))  # 1.28 MB: does not
    assert str(error).startswith("CUDA out of memory. Tried to allocate 1.22 MiB. (CuPy: Out of memory allocating "
                                 "1,280,000 bytes")
    assert isinstance(error, ml.OutOfMemoryError) and isinstance(error, RuntimeError)
    assert isinstance(error, small_gpu.cuda.memory.OutOfMemoryError)  # (code catching CuPy's class still does)
    assert type(error.__cause__) is small_gpu.cuda.memory.OutOfMemoryError


def test_copies_to_the_gpu_out_of_memory_are_torchs_error(small_gpu):
    host = np.zeros(1000)
    _refused(lambda: ml.tensor(host, device="cuda"))
    _refused(lambda: ml.zeros(1000, device="cuda", dtype=ml.float64))
    _refused(lambda: ml.from_numpy(host).to("cuda"))
    _refused(lambda: ml.nn.Linear(100, 100).to("cuda"))


def test_backward_and_optimizer_step_out_of_memory_are_torchs_error(small_gpu):
    pool = small_gpu.get_default_memory_pool()
    w = ml.ones(4, device="cuda", dtype=ml.float64, requires_grad=True)
    for run in (lambda loss: loss.backward(), lambda loss: ml.autograd.grad(loss, [w])):
        pool.set_limit(size=0)
        loss = (w * 2).sum()
        pool.set_limit(size=8)  # (now not even w's gradient fits)
        _refused(lambda: run(loss))
    pool.set_limit(size=0)
    w.grad = ml.ones(4, device="cuda", dtype=ml.float64)
    optimizer = ml.optim.Adam([w])
    pool.set_limit(size=8)
    _refused(optimizer.step)


def test_a_cuda_runtime_error_is_torchs_accelerator_error(small_gpu, monkeypatch):
    x = ml.ones(3, device="cuda", dtype=ml.float64)

    def faulted(*args, **kwargs):  # (a kernel's illegal address, reported at the next call)
        raise small_gpu.cuda.runtime.CUDARuntimeError(700)
    monkeypatch.setattr(small_gpu, "exp", faulted)
    with pytest.raises(ml.AcceleratorError) as caught:
        x.exp()
    assert str(caught.value).startswith("CUDA error: an illegal memory access was encountered\nCUDA kernel errors "
                                        "might be asynchronously reported")
    assert isinstance(caught.value, small_gpu.cuda.runtime.CUDARuntimeError)


def test_a_kernel_error_surfacing_at_item_is_torchs(small_gpu, monkeypatch):
    """``loss.item()``, the first call that waits for the GPU, is where an earlier kernel's error is reported."""
    loss = ml.ones(3, device="cuda", dtype=ml.float64).sum()

    def faulted(self, *args, **kwargs):
        raise small_gpu.cuda.runtime.CUDARuntimeError(700)
    monkeypatch.setattr(fake_cupy.ndarray, "get", faulted)
    for call in (loss.item, loss.tolist, lambda: loss.numpy(force=True), loss.cpu):
        with pytest.raises(ml.AcceleratorError):
            call()


def test_other_errors_pass_unchanged():
    """NumPy's own MemoryError on the CPU is not a CUDA error (torch's CPU allocator raises its own words), nor is
    minilora's own RuntimeError."""
    from minilora.device import raise_device_error_as_torch
    assert raise_device_error_as_torch(MemoryError("host")) is None
    assert raise_device_error_as_torch(RuntimeError("shapes")) is None


def test_the_translated_error_pickles_as_torchs_class(small_gpu):
    error = _refused(lambda: ml.zeros(1000, device="cuda", dtype=ml.float64))
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is ml.OutOfMemoryError and str(again) == str(error)


def test_torchs_size_units():
    from minilora.device import _format_size
    assert [_format_size(n) for n in (1024, 1025, 1 << 20, 3 << 30)] == ["1024 bytes", "1.00 KiB", "1024.00 KiB",
                                                                       "3.00 GiB"]


# -- a killed `minilora exercises build` leaves nothing the next build trips on ------------------------------------
_KILLED_BUILD = """
import os, signal, sys
from minilora import exercises
def killed_half_way(*args):  # (the copy made, its first stub about to be written)
    os.kill(os.getpid(), signal.SIGKILL)  # (as the OOM killer ends it: nothing cleans up)
exercises.stub_source = killed_half_way
exercises.build(sys.argv[1], source=sys.argv[2])
"""


def _run_killed(script, *args):
    import sys
    import background_runs
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = background_runs.run_process([sys.executable, "-c", script, *map(str, args)], env, None, timeout=120)
    assert done.returncode == -9, done.stderr[-3000:]


def _tiny_project(root):
    """A source tree with one exercise region, as ``exercises.build`` reads one."""
    for folder in ("minilora", "kernels", "tests"):
        (root / folder).mkdir(parents=True)
    (root / "minilora" / "double.py").write_text("def double(x):\n    # EXERCISE 1.1: double x\n"
                                                 "    # BEGIN SOLUTION\n    return 2 * x\n    # END SOLUTION\n")
    return root


def test_a_killed_exercises_build_is_cleaned_by_the_next(tmp_path):
    from minilora import exercises
    source, dest = _tiny_project(tmp_path / "source"), tmp_path / "out" / "student"
    _run_killed(_KILLED_BUILD, dest, source)
    left = [entry for entry in os.listdir(dest.parent) if entry.startswith(".student.")]
    assert len(left) == 1 and not dest.exists()  # (the half-made copy, never the destination)
    exercises.build(dest, source=source)
    assert os.listdir(dest.parent) == ["student"]
    assert "NotImplementedError" in (dest / "minilora" / "double.py").read_text()
    assert dest.stat().st_mode & 0o777 == 0o777 & ~_umask()  # (not mkdtemp's private 0700)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- Trainer.save_model swaps its files in as one unit -------------------------------------------------------------
def _trainer(out, weight):
    from minilora import trainer as ml_trainer
    model = ml.nn.Linear(3, 2)
    with ml.no_grad():
        model.weight.fill_(weight)
    return ml_trainer.Trainer(model=model, args=ml_trainer.TrainingArguments(output_dir=str(out), report_to="none",
                                                                              seed=int(weight)))


def _saved_version(out):
    """(the weight the saved model holds, the seed its training_args.bin holds): one save's, or a mix."""
    from minilora.checkpoint import load_file
    weight = float(load_file(os.path.join(out, "model.safetensors"))["weight"].flat[0])
    return weight, float(ml.load(os.path.join(out, "training_args.bin"))["seed"])


def test_save_model_publishes_model_and_arguments_together(tmp_path, monkeypatch):
    """A reader (a server loading output_dir, a kill) at any moment of save_model sees one save's files: before,
    each file replaced its old version in turn, so between two replacements the folder held the new weights beside
    the old training_args.bin (a kill there kept it so)."""
    out = tmp_path / "out"
    _trainer(out, 1.0).save_model()
    (out / "checkpoint-1").mkdir()
    (out / "checkpoint-1" / "optimizer.pt").write_bytes(b"state")
    kept = os.stat(out / "checkpoint-1" / "optimizer.pt").st_ino
    seen, real_replace = [], os.replace

    def replace_and_look(source, target, *args, **kwargs):
        real_replace(source, target, *args, **kwargs)
        if os.path.dirname(os.path.abspath(target)) == str(out) and (out / "training_args.bin").exists():
            seen.append(_saved_version(out))
    monkeypatch.setattr(os, "replace", replace_and_look)
    _trainer(out, 2.0).save_model()
    assert all(version in ((1.0, 1.0), (2.0, 2.0)) for version in seen), seen
    assert _saved_version(out) == (2.0, 2.0)
    assert os.stat(out / "checkpoint-1" / "optimizer.pt").st_ino == kept  # (linked into the new folder, not copied)
    assert sorted(os.listdir(tmp_path)) == ["out"]  # (no temporary folder or lock left beside it)


# -- a test's command: a limit a loaded machine keeps, and nothing left running -------------------------------------
def _running(marker):
    import subprocess
    return subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX's")
def test_a_command_past_its_limit_is_named_and_leaves_no_process(tmp_path):
    """mpirun's ranks outlived the launcher subprocess.run killed at its timeout; now the whole session goes, and the
    error names the command, the time and the load (the limit stretches with the load, at most 6 times)."""
    import background_runs
    marker = f"sleep 60.{os.getpid()}"  # (a command line no other process has)
    with pytest.raises(RuntimeError, match=r"ran past its limit of 0.2 s of CPU \(\d+ s of wall time, load "):
        background_runs.run_process(["sh", "-c", f"{marker} & wait"], os.environ, tmp_path, 0.2)
    assert _running(marker) == []
    done = background_runs.run_process(["sh", "-c", f"{marker} & echo started"], os.environ,
                                       tmp_path, 30)  # (ends at once, leaving a child behind)
    assert (done.returncode, done.stdout) == (0, "started\n") and _running(marker) == []
