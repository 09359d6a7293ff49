"""Round 26's adversarial pass over the CPU threads: the C pool (gemm_pool.c) and the Python helpers (parallel.py).

- MXCSR is per thread, and a thread keeps the register it started with: after ``torch.set_flush_denormal(True)``
  (or a library built with -ffast-math, or ``fesetround``) the caller flushed denormals and the C workers did
  not -- one op's rows half flushed -- and after ``minilora.set_flush_denormal(True)`` followed by torch's
  ``False`` minilora's stale per-thread flag had the helpers flush while the caller did not. Now every thread
  of an op computes under the caller's register, whoever set it: the same bits as the op run whole;
- ``set_num_threads(65)``: the pool started its 63 C workers, then declined the 65 blocks (idle threads for
  the process's lifetime); now it declines before starting any;
- ``minilora.save`` / ``load`` of a file object pass its bytes through a file in the temporary folder: full
  there, a load left the part of the data it had written (on the disk that was full) and said only "No space
  left on device", and a save named its mkstemp file ("what was there before is unchanged: '/tmp/tmpx1.pt'").
  Now the file goes whatever happens and the error names the stream and the temporary folder (and TMPDIR);
- a PEFT model's ``save_pretrained`` wrote its model card after the adapter's files were in place: a full disk
  there said "the save was abandoned" and left the new adapter without its card; now the card is in the unit;
- a signal handler runs in the main thread between two of its bytecodes, also inside minilora's locks: one
  calling ``set_num_threads`` inside a split op's block, or computing (a checkpoint saved on a signal) while the
  last ``computing()`` scope put BLAS's thread count back, waited forever for a lock its own thread held;
- ``set_num_threads`` started its helpers at once: ``set_num_threads(2**40)`` started threads until the system
  refused ("can't start new thread", thousands left behind). Now nothing starts until work is split (torch's
  pool also starts lazily), a count past torch's int32 is refused as torch refuses it, and a helper the
  system will not start leaves its block to the calling thread (same numbers, a warning).
"""
import contextlib
import ctypes
import errno
import io
import functools
import os
import platform
import signal
import sys
import threading
import time

import numpy as np
import pytest

import minilora as ml
from minilora import blas, cpu_switches, gemm_pool, parallel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_c_threads_review_r25 import _in_a_child  # noqa: E402  (a fresh Python: threads it starts die with it)
from test_gemm_pool_r25 import threads  # noqa: E402,F401  (the fixture: set_num_threads, the count put back)

needs_pool = pytest.mark.skipif(not gemm_pool.available(), reason="no OpenBLAS CBLAS or no C compiler here")
needs_mxcsr = pytest.mark.skipif(not (sys.platform == "linux" and platform.machine() == "x86_64"),
                                 reason="MXCSR is x86-64 Linux's")
FE_UPWARD = 0x800  # x86's fesetround constant


@contextlib.contextmanager
def _register_put_back():
    """This thread's floating-point environment as it was, whatever the test changed (libm's own calls)."""
    libm, saved = ctypes.CDLL("libm.so.6"), (ctypes.c_ubyte * 32)()
    libm.fegetenv(saved)
    try:
        yield
    finally:
        cpu_switches.set_flush_denormal(False)  # (minilora's own switch: it also lets OpenBLAS have its threads back)
        libm.fesetenv(saved)


def _bits(a):
    """An array's bit patterns: under DAZ a denormal compares equal to 0, so values cannot be compared."""
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _warm_threads():
    """Start the C workers and the Python helpers (before the register changes: they keep what they had)."""
    x = np.ones(1 << 19, np.float32)
    parallel.multiply(x, x)
    parallel.rows(lambda block: None, np.zeros(2), work_per_row=parallel.MIN_ITEMS)


def _torch_flushes():
    torch = pytest.importorskip("torch")
    torch.set_flush_denormal(True)


def _rounds_up():
    ctypes.CDLL("libm.so.6").fesetround(FE_UPWARD)


def _minilora_flushed_then_torch_stopped():
    torch = pytest.importorskip("torch")
    cpu_switches.set_flush_denormal(True)
    torch.set_flush_denormal(False)


@pytest.fixture(params=[_torch_flushes, _rounds_up, _minilora_flushed_then_torch_stopped],
                ids=["torch_flushes", "rounds_up", "minilora_flushed_then_torch_stopped"])
def caller_register(request, threads):
    """The calling thread's MXCSR changed by someone else than the op (after its threads started)."""
    threads(2)
    _warm_threads()
    with _register_put_back():
        request.param()
        yield


def _in_c_threads(monkeypatch, op, *arrays):
    """``op(*arrays)``, checked to have run in gemm_pool's C threads (not declined to NumPy's code)."""
    ran, real_run = [], gemm_pool.run
    monkeypatch.setattr(gemm_pool, "run", lambda *args: ran.append(real_run(*args)) or ran[-1])
    out = op(*arrays)
    assert ran == [True]
    return out


def _denormal_heavy(shape, dtype, seed, exponents):
    """Values of magnitudes 10**exponents[0] .. 10**exponents[1]: around the normal range's edge (float32's
    ~1.2e-38, float64's ~2.2e-308) they, or their products' sums, are denormal in part (for flush-to-zero to
    change an element, the element itself has to come out denormal: BLAS's FMAs round no product alone)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 10.0 ** rng.uniform(*exponents, shape)).astype(dtype)


# (made before any test changes the register: a cast to float32 under FTZ would flush them already; the
# products' blocks take milliseconds, so a sleeping worker wakes in time to run its own)
PRODUCTS = {dtype: tuple(_denormal_heavy(shape, dtype, seed, exponents) for seed, shape in enumerate([(2048, 128), (128, 256)]))
            for dtype, exponents in [(np.float32, (-20.5, -19)), (np.float64, (-156.5, -153.5))]}
DENORMALS = _denormal_heavy(1 << 19, np.float32, 2, (-41, -36))


@needs_mxcsr
@needs_pool
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_c_threads_products_follow_the_callers_register(caller_register, dtype, monkeypatch):
    a, b = PRODUCTS[dtype]
    with parallel.computing():  # (BLAS on this thread: OpenBLAS's own threads keep their register)
        want = np.concatenate([blas.matmul(rows, b) for rows in np.array_split(a, 2)])  # (MKL's or OpenBLAS's)
    np.testing.assert_array_equal(_bits(_in_c_threads(monkeypatch, parallel.matmul, a, b)), _bits(want))


@needs_mxcsr
@needs_pool
@pytest.mark.parametrize("name", ["add", "multiply"])
def test_the_c_threads_adds_and_multiplies_follow_the_callers_register(caller_register, name, monkeypatch):
    x, y = DENORMALS, np.full(len(DENORMALS), 0.75, np.float32)
    want = getattr(np, name)(x, y)  # (the caller's thread, whole)
    np.testing.assert_array_equal(_bits(_in_c_threads(monkeypatch, getattr(parallel, name), x, y)), _bits(want))


@needs_mxcsr
def test_the_python_helpers_blocks_follow_the_callers_register(caller_register):
    x = DENORMALS[:1 << 18]
    out = np.empty_like(x)

    def block(rows, out_rows):
        if threading.current_thread() is threading.main_thread():
            time.sleep(0.05)  # (the helper takes its block rather than leave it to the caller)
        np.multiply(rows, np.float32(0.75), out=out_rows)
    parallel.rows(block, x, out, work_per_row=1)
    np.testing.assert_array_equal(_bits(out), _bits(x * np.float32(0.75)))


@needs_mxcsr
def test_flushing_reads_the_register_whoever_set_it():
    torch = pytest.importorskip("torch")
    with _register_put_back():
        torch.set_flush_denormal(True)
        assert cpu_switches.flushing()
        cpu_switches.set_flush_denormal(True)
        torch.set_flush_denormal(False)
        assert not cpu_switches.flushing()


THREAD_COUNTS = """
import threading
import numpy as np
from minilora import gemm_pool, parallel
before = threading.active_count()
try:
    parallel.set_num_threads(2**40)
except ValueError as exc:
    print("ValueError:", exc)
print(threading.active_count() - before, parallel.num_threads())
parallel.set_num_threads(65)
rng = np.random.default_rng(0)
a, w = rng.standard_normal((4160, 128)).astype(np.float32), rng.standard_normal((256, 128)).astype(np.float32)
got = parallel.matmul(a, w.T)  # (65 blocks)
print(np.array_equal(got, np.concatenate([rows @ w.T for rows in np.array_split(a, 65)])),
      gemm_pool._pool().ml_pool_workers() if gemm_pool.available() else 0)
"""


@functools.lru_cache(maxsize=None)
def _thread_counts_in_a_child():
    """THREAD_COUNTS' lines, run once for the tests below (each start of a Python with minilora costs seconds)."""
    return _in_a_child(THREAD_COUNTS).splitlines()


def test_a_thread_count_past_torchs_int32_is_refused_by_name():
    lines = _thread_counts_in_a_child()
    assert lines[0].startswith("ValueError: set_num_threads: 1099511627776 threads") and "int32" in lines[0]
    assert lines[1].split()[0] == "0"


def test_more_blocks_than_the_pool_has_slots_start_no_c_thread():
    assert _thread_counts_in_a_child()[2].split() == ["True", "0"]


def test_set_num_threads_starts_no_thread(threads):
    before = threading.active_count()
    threads(parallel.num_threads() + len(parallel._helpers) + 3)  # (more than have ever started here)
    assert threading.active_count() == before


def test_minilora_num_threads_past_torchs_int32_is_refused_by_name():
    code = "import minilora"
    env = {**os.environ, "MINILORA_NUM_THREADS": str(2**31)}
    import background_runs
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = background_runs.run_process([sys.executable, "-c", code], env=env, cwd=root, timeout=60)
    assert done.returncode != 0 and "MINILORA_NUM_THREADS must be at most 2147483647" in done.stderr


def test_a_helper_the_system_will_not_start_leaves_its_block_to_the_caller(threads, monkeypatch):
    class Refused:
        def __init__(self):
            raise RuntimeError("can't start new thread")
    monkeypatch.setattr(parallel, "_Helper", Refused)
    threads(len(parallel._helpers) + 3)  # (at least two helpers this process does not have)
    x = np.arange(parallel.num_threads() * 4, dtype=np.float64)
    out = np.zeros_like(x)
    with pytest.warns(RuntimeWarning, match="the system started no more"):
        parallel.rows(lambda rows, out_rows: np.multiply(rows, 2.0, out=out_rows), x, out,
                      work_per_row=parallel.MIN_ITEMS)
    np.testing.assert_array_equal(out, x * 2)


@pytest.fixture
def fill_temporary_folder(tmp_path, monkeypatch):
    """``fill_temporary_folder()``: from now on a temporary folder (``tempfile``'s) that is full -- a write there
    stores half its bytes, then ENOSPC; returns the folder."""
    import tempfile
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to see which file is written")
    folder = tmp_path / "temporary"
    folder.mkdir()
    real_fdopen = os.fdopen

    class HalfWritten(io.FileIO):
        def write(self, data):
            super().write(bytes(data)[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(fd, mode="r", *args, **kwargs):
        if "w" in mode and os.path.dirname(os.readlink(f"/proc/self/fd/{fd}")) == str(folder):
            return HalfWritten(fd, "wb")
        return real_fdopen(fd, mode, *args, **kwargs)

    def fill():
        monkeypatch.setattr(tempfile, "tempdir", str(folder))
        monkeypatch.setattr(os, "fdopen", fdopen)
        return folder
    return fill


def test_a_load_from_a_stream_through_a_full_temporary_folder_leaves_nothing_there_and_says_where(
        fill_temporary_folder):
    saved = io.BytesIO()
    ml.save({"w": ml.arange(1000.0)}, saved)
    saved.seek(0)
    folder = fill_temporary_folder()
    with pytest.raises(OSError) as caught:
        ml.load(saved)
    assert caught.value.errno == errno.ENOSPC
    assert str(folder) in str(caught.value) and "TMPDIR" in str(caught.value)
    assert os.listdir(folder) == []


def test_a_save_to_a_stream_through_a_full_temporary_folder_names_the_stream_and_the_folder(fill_temporary_folder):
    folder, stream = fill_temporary_folder(), io.BytesIO()
    with pytest.raises(OSError) as caught:
        ml.save({"w": ml.arange(1000.0)}, stream)
    message = str(caught.value)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == "the BytesIO object"
    assert str(folder) in message and "TMPDIR" in message and ".pt'" not in message
    assert stream.getvalue() == b"" and os.listdir(folder) == []


def _card_write_fills_the_disk(monkeypatch):
    """ENOSPC when README.md is flushed to disk (fsync, where a full disk shows), anywhere."""
    fsync = os.fsync

    def full_disk(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(("README.md", ".README.md")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fsync(fd)
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to see which file is fsynced")
    monkeypatch.setattr(os, "fsync", full_disk)


@pytest.mark.parametrize("before", ["nothing", "an adapter without a card"])
def test_a_full_disk_while_the_model_card_is_written_leaves_the_adapter_folder_as_it_was(tmp_path, monkeypatch,
                                                                                           before):
    from minilora.lora import LoraConfig, get_peft_model
    from test_faults import leftovers
    from test_train import tiny_llama
    model = get_peft_model(tiny_llama(0), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    folder = tmp_path / "adapter"
    if before == "an adapter without a card":  # (a card already there is the user's: not written again)
        model.save_pretrained(str(folder))
        os.remove(folder / "README.md")
    kept = {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))} if folder.exists() else {}
    for p in model.parameters():  # (another adapter to save: new weights)
        if p.requires_grad:
            p.data = p.data + 1
    _card_write_fills_the_disk(monkeypatch)
    with pytest.raises(OSError) as caught:
        model.save_pretrained(str(folder))
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    now = {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))} if folder.exists() else {}
    assert now == kept and leftovers(tmp_path) == []


HANDLERS_INSIDE_THE_LOCKS = """
import os, signal
import numpy as np
from minilora import blas, parallel
parallel.set_num_threads(2)
signal.signal(signal.SIGUSR1, lambda *args: parallel.set_num_threads(1))
def block(rows):
    if rows[0] == 0:  # (the caller's block: the handler runs here, inside the split region)
        os.kill(os.getpid(), signal.SIGUSR1)
parallel.rows(block, np.arange(4), work_per_row=parallel.MIN_ITEMS)
print("set_num_threads", parallel.num_threads())
if blas.get_num_threads() is None:  # (no OpenBLAS: computing() changes nothing, takes no lock)
    print("computing", "no BLAS")
else:
    blas.set_num_threads(2)
    real_set = blas.set_num_threads
    def set_and_signal(n):
        if n != 1:  # (the count put back as the last computing() scope ends: inside its lock)
            os.kill(os.getpid(), signal.SIGUSR1)
        return real_set(n)
    def handler(*args):
        blas.set_num_threads = real_set
        with parallel.computing():  # (a handler that computes: a checkpoint saved on a signal)
            pass
    blas.set_num_threads = set_and_signal
    signal.signal(signal.SIGUSR1, handler)
    with parallel.computing():
        pass
    print("computing", blas.get_num_threads())
"""


@functools.lru_cache(maxsize=None)
def _handlers_inside_the_locks():
    return _in_a_child(HANDLERS_INSIDE_THE_LOCKS).splitlines()


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_a_signal_handler_setting_the_thread_count_inside_a_split_op_does_not_hang():
    assert _handlers_inside_the_locks()[0] == "set_num_threads 1"


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_a_signal_handler_computing_while_blas_threads_are_put_back_does_not_hang():
    assert _handlers_inside_the_locks()[1] in ("computing 2", "computing no BLAS")
