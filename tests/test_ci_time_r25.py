"""CI time and CI robustness (round 25).

* A test's command runs under a limit counted in seconds of CPU it can have (``background_runs.run_process``,
  which stretches with the machine's load and kills what the command left behind), never under
  ``subprocess.run(..., timeout=<wall seconds>)``: on CI's two cores, shared with another job, a child that imports
  torch took longer than a 60 s wall-clock limit without being stuck, and the test failed for nothing.
* ``minilora exercises check``'s pytest sessions (test_exercises.py: one per exercise, on CI's helper core, which
  the main process waited for) do not warm every kernel build of their copy (``background_runs.start_all``).
* A session of every test starts the kernel builds before collecting (``background_runs.start_warming``).
"""
import ast
import contextlib
import sys
import time
import types
from pathlib import Path

import background_runs
from minilora import exercises

TESTS = Path(__file__).resolve().parent
# Not tests: the runner itself (its RUN_TIMEOUT is an hour, the last resort for a stuck run) and a script run by hand
NOT_TESTS = {"background_runs.py", "kill_sweep_r24.py"}
WALL_CLOCK_CALLS = {"subprocess.run", "subprocess.call", "subprocess.check_call", "subprocess.check_output"}


def wall_clock_limits(source):
    """Line numbers of the ``subprocess.run``-like calls of ``source`` given a ``timeout=``."""
    if "timeout" not in source:  # (most files: no parse)
        return []
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and any(keyword.arg == "timeout" for keyword in node.keywords)
            and ast.unparse(node.func) in WALL_CLOCK_CALLS]


def test_no_test_runs_a_command_under_a_wall_clock_limit():
    assert wall_clock_limits("import subprocess\nsubprocess.run(['true'], timeout=60)\n") == [2]  # (the scan sees one)
    assert wall_clock_limits("background_runs.run_process(['true'], timeout=60)\n") == []
    found = {path.name: lines for path in sorted(TESTS.glob("*.py")) if path.name not in NOT_TESTS
             for lines in [wall_clock_limits(path.read_text())] if lines}
    assert found == {}, f"subprocess.run(..., timeout=...) flakes on a loaded CI: use background_runs.run_process {found}"


def test_run_process_feeds_input_and_takes_the_defaults_of_subprocess_run(tmp_path):
    done = background_runs.run_process([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"],
                                       input="piped", timeout=60)
    assert (done.returncode, done.stdout) == (0, "PIPED\n")
    done = background_runs.run_process([sys.executable, "-c", "import os; print(os.getcwd())"], cwd=tmp_path,
                                       timeout=60)
    assert done.stdout.strip() == str(tmp_path)


class _Recorder:
    """Stands for BackgroundRuns in ``start_all``: the keys submitted."""

    def __init__(self):
        self.keys = []

    def submit(self, key, *call, **options):
        self.keys.append(key)

    def needed_by(self, position):
        pass

    def start(self):
        pass

    @contextlib.contextmanager
    def held(self):
        yield


def _submitted_for_a_kernel_test(monkeypatch, environ):
    item = types.SimpleNamespace(fixturenames=("kernel_device",), module=None)
    session = types.SimpleNamespace(items=[item], config=types.SimpleNamespace(option=types.SimpleNamespace(
        collectonly=False)))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    runs = _Recorder()
    background_runs.start_all(session, runs)
    return runs.keys


def test_an_exercise_check_session_does_not_warm_every_kernel_build(monkeypatch, tmp_path):
    """``minilora exercises check``'s sessions run a copy whose kernels' text names the copy (no build of the cache's
    is theirs): warming all of them cost ~30 s of CPU per CUDA or optimizer exercise, most of those checks' time."""
    monkeypatch.delenv(exercises.REPORT_ENV, raising=False)
    assert "kernels/*.cu builds" in _submitted_for_a_kernel_test(monkeypatch, {})  # a test session: warmed
    keys = _submitted_for_a_kernel_test(monkeypatch, {exercises.REPORT_ENV: str(tmp_path / "report.json")})
    assert "kernels/*.cu builds" not in keys and "emulator cache" in keys  # (the runtime's builds are shared)


def _config(*args, **options):
    option = types.SimpleNamespace(**{"collectonly": False, "keyword": "", "markexpr": "", **options})
    return types.SimpleNamespace(args=list(args), option=option,
                                 invocation_params=types.SimpleNamespace(dir=TESTS.parent))


def test_the_kernel_builds_start_before_collection_when_every_test_runs(monkeypatch):
    """CI collects ~37,000 tests in ~30 s of its main process; the helper's core builds meanwhile."""
    monkeypatch.delenv(exercises.REPORT_ENV, raising=False)
    started = {}
    for args, options in [(("tests",), {}), ((str(TESTS),), {}), ((".",), {}), (("tests/test_ops.py",), {}),
                          (("tests/test_ops.py::test_add", "tests"), {}), (("tests",), {"keyword": "lora"}),
                          (("tests",), {"markexpr": "ex1_1"}), (("tests",), {"collectonly": True})]:
        runs = _Recorder()
        background_runs.start_warming(_config(*args, **options), runs)
        started[args, tuple(options)] = runs.keys
    every = ["emulator cache", "kernels/*.cu builds"]
    assert started == {(("tests",), ()): every, ((str(TESTS),), ()): every, ((".",), ()): every,
                       (("tests/test_ops.py",), ()): [], (("tests/test_ops.py::test_add", "tests"), ()): every,
                       (("tests",), ("keyword",)): [], (("tests",), ("markexpr",)): [],
                       (("tests",), ("collectonly",)): []}


def test_runs_go_in_the_order_their_files_come_up_whenever_submitted(monkeypatch):
    """``start_all`` queues the session's runs with the helper already busy, file by file (``needed_by``): none starts
    before all are queued, then the earliest file's first, whatever the order they were submitted in; a run a test
    submits itself, after start_all, before every queued one."""
    monkeypatch.delenv("MINILORA_BACKGROUND_LOG", raising=False)  # (these runs are no session's)
    runs = background_runs.BackgroundRuns()
    ran = []
    monkeypatch.setattr(runs, "_call", lambda module_name, function_name, args: ran.append(function_name))
    try:
        with runs.held():
            runs.start()
            runs.needed_by(5)
            runs.submit("late", "m", "late")
            time.sleep(0.2)  # (the helper, not held, took it here)
            runs.needed_by(2)
            runs.submit("early", "m", "early")
            runs.submit("early too", "m", "early too")
            runs.needed_by(-1)
            runs.submit("now", "m", "now")
        deadline = time.monotonic() + 60
        while len(ran) < 4 and time.monotonic() < deadline:  # (the helper's order: no test takes a run over)
            time.sleep(0.01)
        assert ran == ["now", "early", "early too", "late"]
    finally:
        runs.close()
