"""Shared fixtures: every device-aware test runs on cpu, emu and cuda (skipped when not enabled)."""
import logging
import os
import signal
import sys

import numpy as np
import pytest

import minilora as ml
from background_runs import BackgroundRuns, start_all, start_warming
from minilora.device import all_devices

os.environ.setdefault("MINILORA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".cache"))


def _device_params():
    params = []
    for dev in all_devices():
        marks = [pytest.mark.skipif(not dev.enabled(), reason=f"{dev.name}: {dev.why_disabled}")]
        params.append(pytest.param(dev.name, marks=marks, id=dev.name))
    return params


DEVICES = _device_params()


PER_TEST_TIMEOUT = 300  # seconds: generous (the whole suite runs in ~13 min on CI's 2 cores)


@pytest.hookimpl(tryfirst=True)  # before pytest-timeout's own pytest_configure reads its settings
def pytest_configure(config):
    """Register one marker per exercise region in the source (``ex1_1``: ``pytest -m ex1_1``)."""
    from minilora.exercises import marker_lines
    for line in marker_lines():
        config.addinivalue_line("markers", line)
    # A test that hangs (a server thread that never answers) fails by itself, with every thread's stack,
    # instead of taking the whole run with it: pytest-timeout (the [test] extra) with this default, unless
    # --timeout, PYTEST_TIMEOUT or an ini file sets one
    if (config.pluginmanager.hasplugin("timeout") and config.getoption("timeout", None) is None
            and "PYTEST_TIMEOUT" not in os.environ and not config.getini("timeout")):
        config.option.timeout = PER_TEST_TIMEOUT
    # pytest resets warning filters around each test, so minilora's own (tensor.py: NumPy's floating-point
    # RuntimeWarnings from minilora's modules, which torch never prints) is restated here
    config.addinivalue_line("filterwarnings", r"ignore:(divide by zero|invalid value|overflow|underflow) "
                                              r"encountered:RuntimeWarning:minilora\.")
    config.stash[BACKGROUND] = BackgroundRuns()
    start_warming(config, config.stash[BACKGROUND])


# Runs in processes of their own (notebooks, exercise checks) go on one helper thread as soon as the tests are
# known, on the core the one-test-at-a-time main process leaves idle (tests/background_runs.py)
BACKGROUND = pytest.StashKey()


def pytest_collection_finish(session):
    start_all(session, session.config.stash[BACKGROUND])


def pytest_sessionfinish(session):
    session.config.stash[BACKGROUND].close()


@pytest.fixture(scope="session")
def background(pytestconfig):
    """The session's BackgroundRuns (tests/background_runs.py)."""
    return pytestconfig.stash[BACKGROUND]


@pytest.fixture(params=DEVICES)
def device(request):
    """The name of an enabled device: 'cpu', 'emu' or 'cuda'."""
    return request.param


@pytest.fixture(params=[p for p in DEVICES if p.id != "cpu"])
def kernel_device(request):
    """A device that runs the CUDA kernels: ``emu`` or ``cuda`` (skipped when not enabled)."""
    return ml.device(request.param)


@pytest.fixture
def split_into_blocks(monkeypatch):
    """Every op that runs on blocks of rows in parallel (``minilora.parallel``) splits even tiny
    arrays, into 3 uneven blocks: a wrong block boundary shows up as a wrong value or gradient."""
    from minilora import parallel
    monkeypatch.setattr(parallel, "MIN_ITEMS", 1)
    threads = parallel.num_threads()
    parallel.set_num_threads(3)
    yield
    parallel.set_num_threads(threads)


def _every_launch_under(monkeypatch, tool):
    """Every emulator launch from now on runs with ``tool=True`` ('racecheck' or 'initcheck', both on the
    racecheck build); returns the list of the kernel names launched, for the test to check that the
    kernels it means were reached."""
    from minilora import emulator as emu
    real_call = emu.RawKernel.__call__
    launched = []

    def with_tool(self, grid, block, args, *, shared_mem=0, **kw):
        if self._variant == "racecheck":  # already the checked build: launch it
            return real_call(self, grid, block, args, shared_mem=shared_mem, **kw)
        launched.append(self.name)
        kw.pop("check_races", None)
        return real_call(self, grid, block, args, shared_mem=shared_mem, **{tool: True}, **kw)

    monkeypatch.setattr(emu.RawKernel, "__call__", with_tool)
    return launched


@pytest.fixture
def racecheck_every_launch(monkeypatch):
    """Every emulator launch in the test runs under racecheck=True (compute-sanitizer's racecheck: two
    threads touching one shared byte, one writing, with no barrier between). Yields the list of the
    kernel names launched."""
    return _every_launch_under(monkeypatch, "racecheck")


@pytest.fixture
def initcheck_every_launch(monkeypatch):
    """Every emulator launch in the test runs under initcheck=True (no thread reads a shared byte
    before one is written); yields the names launched."""
    return _every_launch_under(monkeypatch, "initcheck")


@pytest.fixture(scope="module")
def memcheck_every_launch():
    """Every emulator launch in the test module checks each load against its arguments' fences, as
    ``memcheck=True`` (``$MINILORA_EMU_MEMCHECK=1``): for the files of public kernels, whose small launches
    the checks slow little, so a read next to an array is named."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINILORA_EMU_MEMCHECK", "1")
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler for the test, whatever the parent left: a shell that starts pytest in the
    background (``pytest ... &``) ignores SIGINT, and then Python installs none. Ctrl-C tests need Python's."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def two_threads():
    """minilora and torch on 2 threads: a reduction of 32768+ elements split as torch's at::parallel_for splits it
    (tests/test_float64_sums_r15.py, test_sums_r16.py)."""
    import torch
    threads = ml.parallel.num_threads()
    ml.parallel.set_num_threads(2)
    torch.set_num_threads(2)
    yield
    ml.parallel.set_num_threads(threads)
    torch.set_num_threads(1)  # (_torch_one_thread's choice for the reference checks)


@pytest.fixture(params=[1, 2, 3])
def any_threads(request):
    """minilora on 1, 2 and 3 threads in turn (a split op's blocks: none, two, three uneven ones)."""
    threads = ml.parallel.num_threads()
    ml.parallel.set_num_threads(request.param)
    yield request.param
    ml.parallel.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    ml.manual_seed(0)


@pytest.fixture(autouse=True)
def _torch_one_thread():
    """Reference checks run PyTorch on tiny tensors, where its thread pool costs more than it saves
    (10x slower on a busy 2-core machine). Speed is measured in benchmarks/, not in tests."""
    torch = sys.modules.get("torch")  # only once some test has imported it
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _transformers_log_level_put_back():
    """A test may quiet transformers' logger (``set_verbosity_error``, ``setLevel(ERROR)``); the next test gets it as
    it was. Its level decides some of transformers' defaults (``TrainingArguments.disable_tqdm``) and which warnings
    a test can compare: left at error, it failed later tests in a full run, by the order they ran in."""
    logger = logging.getLogger("transformers")
    level = logger.level
    yield
    logger.setLevel(level)
