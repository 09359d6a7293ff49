"""Runs in processes of their own (notebook kernels, the exercise checks' pytest subprocesses), started as
soon as the session knows its tests, one at a time beside the tests.

The main pytest process runs one test at a time, on one core: on CI's two cores the other one is idle
for most of the run. These runs used to start only when their test file came up, two at a time while
the main process waited for them (tests/test_notebooks.py: a minute and a half of CI's time). Now a
helper thread runs them one after the other from the start of the session, on that idle core, and a
test takes its run's result when it gets there.

A test file with such runs defines ``start_background_runs(items, runs)``, which ``runs.submit``\\ s the
runs its selected ``items`` need (conftest.py calls it for every file in the session, in the order the
files run, once the tests are collected); its tests take the results with ``runs.result(key)``. A run
that has not started by then is started by the test itself, so a file run on its own still has two runs
going at a time (the helper's and the test's).

Each run is a call of a function of the test file in a Python process of its own (this file run as a
script), in the environment the session started with: the tests running meanwhile patch ``os.environ``
(MINILORA_CACHE_DIR, MINILORA_DEVICE=cuda, CC, ...) and functions of ``os`` (fsync, rename, open, to
simulate full disks), which must not reach a run, nor a run's calls reach their patches.

The helper takes the queued runs in the order their test files come up (``needed_by``: the file's position in the
session; the kernel builds before every file, a run a test submits itself first of all), so that each is done
before the main process gets there. Queued by kind instead (the sanitizer launches and scripts behind the notebooks,
which come up later), CI's main process waited ~90 s for runs its next tests needed while the helper ran notebooks
needed minutes later.

A test file may also list, in ``EMULATOR_BUILDS``, the emulator modules its fixtures build ([(RawModule's keywords,
changes to the environment)]): the helper compiles them into the session's kernel cache, in file order, before the
notebooks, so that the main process finds them built (``build_emulator_modules``); minilora's own kernels/*.cu are
built first of all (``warm_project_kernels``).

With ``$MINILORA_BACKGROUND_LOG`` set, each run appends a line to that file: its key, its start and end in
seconds since the session started, and who ran it (``helper``: the helper thread; ``test``: the test itself,
which got there before the helper did) -- the timeline to check that the idle core is used.
"""
import contextlib
import heapq
import importlib
import itertools
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

HERE = Path(__file__).resolve().parent


class BackgroundRuns:
    """Keyed calls in processes of their own, on one helper thread: ``submit`` once, ``result`` when needed."""

    def __init__(self):
        self.environ = dict(os.environ)  # the session's, before any test changes it
        self._started = time.monotonic()
        self._log = self.environ.get("MINILORA_BACKGROUND_LOG")
        self._queue = []  # heap of (position of the file that needs it, order of submission, key)
        self._needed_by = -1  # (needed_by; -1: before every file)
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._closing = False
        self._held = False  # (``held``)
        self._helper = None
        self._runs = {}  # key -> (future, call)
        self._taken = {}  # key -> the future of a run a test took over (its own future cancelled for the helper)
        self._folder = None
        self._command_folders = {}  # key -> the working directory of submit_commands' run
        self._answers = itertools.count()

    def needed_by(self, position):
        """The runs submitted from now on are needed when the session's ``position``-th test file comes up (-1:
        before every file)."""
        self._needed_by = position

    def submit(self, key, module_name, function_name, *args):
        """Queue ``function_name(*args)`` of the test file ``module_name`` under ``key`` (a second submit of
        a key keeps the first), behind the runs of the files that come up before the one it is needed by."""
        if key in self._runs:
            return
        self._runs[key] = (Future(), (module_name, function_name, args))
        with self._wakeup:
            heapq.heappush(self._queue, (self._needed_by, next(self._order), key))
            self._wakeup.notify()

    def submit_commands(self, key, commands_in, timeout):
        """Queue ``run_commands(commands_in(folder), folder, timeout)`` under ``key``, ``folder`` a new folder of its
        own (a second call is a no-op): that folder, the commands' working directory, where they leave their files
        for the test to read once ``result(key)`` has their [(exit code, stdout, stderr)]."""
        if key not in self._command_folders:
            self._command_folders[key] = folder = self.folder("commands")
            self.submit(key, "background_runs", "run_commands", tuple(commands_in(folder)), str(folder), timeout)
        return self._command_folders[key]

    def start(self):
        """Start the helper thread on the queued runs: once every file has submitted its runs (``start_all``),
        so that a run a later file submitted does not start before an earlier file's."""
        if self._helper is None:
            self._helper = threading.Thread(target=self._help, name="background-run", daemon=True)
            self._helper.start()

    @contextlib.contextmanager
    def held(self):
        """The helper takes no new run meanwhile (the one it runs goes on): ``start_all`` queues the session's runs
        with the helper already busy (``start_warming``), and a later file's run must not start before an earlier
        file's, queued after it."""
        with self._wakeup:
            self._held = True
        try:
            yield
        finally:
            with self._wakeup:
                self._held = False
                self._wakeup.notify()

    def __contains__(self, key):
        return key in self._runs

    def result(self, key):
        """The call's return value (or its exception, raised): from the helper thread, or -- when the
        helper has not started it yet -- from a process started here, beside the helper's. The test's own timeout
        stops meanwhile (``_test_timeout_stopped``): the run has its own, from its start (``RUN_TIMEOUT``)."""
        self.start()  # (a session that did not go through start_all)
        future, call = self._runs[key]
        with _test_timeout_stopped():
            if key not in self._taken and future.cancel():  # kept for the key's next test: run once, as the helper
                self._taken[key] = Future()
                try:
                    self._taken[key].set_result(self._timed(key, "test", call))
                except BaseException as error:  # noqa: BLE001  (raised below, and to the key's next test)
                    self._taken[key].set_exception(error)
            return self._taken.get(key, future).result()

    def folder(self, name):
        """A new empty folder for a run's files, removed at the end of the session."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self._session_folder()))

    def close(self):
        """At the end of the session: queued runs dropped, the running one waited for, the folders removed."""
        if self._helper is not None:
            with self._wakeup:
                self._closing = True
                self._wakeup.notify()
            self._helper.join()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def _help(self):
        """The helper thread: the queued runs one at a time, skipping those a test took over (cancelled)."""
        while True:
            with self._wakeup:
                while (not self._queue or self._held) and not self._closing:
                    self._wakeup.wait()
                if self._closing:
                    return
                key = heapq.heappop(self._queue)[2]
            future, call = self._runs[key]
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._timed(key, "helper", call))
            except BaseException as error:  # noqa: BLE001  (handed to the test that takes the result)
                future.set_exception(error)

    def _timed(self, key, who, call):
        """``_call(*call)``, with a line in $MINILORA_BACKGROUND_LOG when set."""
        start = time.monotonic() - self._started
        try:
            return self._call(*call)
        finally:
            if self._log:
                end = time.monotonic() - self._started
                with open(self._log, "a") as log:
                    log.write(f"{key!r} {start:.1f} {end:.1f} {who}\n")

    def _session_folder(self):
        with self._wakeup:  # the helper's first run and a test's may ask at once
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="minilora-background-runs-"))
            return self._folder

    def _call(self, module_name, function_name, args):
        answer = self._session_folder() / f"answer-{next(self._answers)}.pickle"
        try:
            done = subprocess.run([sys.executable, __file__, str(answer)], input=pickle.dumps(
                (module_name, function_name, args)), capture_output=True, cwd=HERE, env=self.environ,
                timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired as expired:
            raise RuntimeError(f"{module_name}.{function_name} ran past RUN_TIMEOUT ({RUN_TIMEOUT} s from its start; "
                               f"stuck?):\n{(expired.stderr or b'').decode(errors='replace')[-3000:]}") from None
        if not answer.is_file():
            raise RuntimeError(f"{module_name}.{function_name}{args!r} died (exit code {done.returncode}):\n"
                               f"{done.stderr.decode(errors='replace')[-3000:]}")
        with open(answer, "rb") as file:
            ok, value = pickle.load(file)
        if ok:
            return value
        raise value


# A run's last-resort limit, from the run's own start: a stuck run fails its test with its stderr. Generous: on a
# machine at load 17 a run of exercise checks (a pytest subprocess per exercise, kernels compiled) takes ten times as
# long as on an idle one.
RUN_TIMEOUT = 3600


@contextlib.contextmanager
def _test_timeout_stopped():
    """The per-test timeout (pytest-timeout's SIGALRM timer, conftest's PER_TEST_TIMEOUT) stopped while a test waits
    for a run, and started again with the time it had left: the wait is the run's time, not the test's. A test
    taking a run that the helper thread had started minutes before (or that queued behind other runs) waited that
    long on its own clock, and on a loaded machine ran past 300 s without being stuck (test_exercises' stub tests,
    test_kernels_bf16's race checks). The thread method's timer (no SIGALRM) cannot be stopped: it keeps running."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return
    left, _ = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        yield
    finally:
        if left:
            signal.setitimer(signal.ITIMER_REAL, left)


def start_all(session, runs):
    """Call each collected test file's ``start_background_runs(items, runs)``, in the order the files run; first of
    all, where the tests use the CUDA emulator, ``warm_emulator_cache``."""
    if session.config.option.collectonly:
        return
    with runs.held():
        _submit_all(session, runs)
    runs.start()


def _submit_all(session, runs):
    if _builds_kernels(session.items):
        runs.submit("emulator cache", "background_runs", "warm_emulator_cache")
    if _launches_project_kernels(session.items) and not _an_exercise_check():
        runs.submit("kernels/*.cu builds", "background_runs", "warm_project_kernels")
    modules = []
    for item in session.items:
        module = getattr(item, "module", None)
        if module is not None and module not in modules:
            modules.append(module)
    for position, module in enumerate(modules):
        runs.needed_by(position)
        if hasattr(module, "EMULATOR_BUILDS"):
            runs.submit(("emulator builds", module.__name__), "background_runs", "build_emulator_modules",
                        module.EMULATOR_BUILDS)
        if hasattr(module, "start_background_runs"):
            module.start_background_runs(session.items, runs)
    runs.needed_by(-1)  # (a run a test submits itself is needed now)


def start_warming(config, runs):
    """Start building the emulator's runtime and minilora's kernels (``warm_emulator_cache``, ``warm_project_kernels``)
    at ``pytest_configure``, before the tests are collected, when the session runs every test of this folder (CI's
    ``python -m pytest -q tests``): collecting ~37,000 tests kept CI's main process ~30 s, the helper's core idle, and
    every run behind these builds started that much later (the main process waited 34 s for three of them). A session
    of a few files or a selection (-k, -m) waits for its collection, as before: it may launch no kernel at all."""
    if _runs_every_test(config) and not _an_exercise_check():
        runs.submit("emulator cache", "background_runs", "warm_emulator_cache")
        runs.submit("kernels/*.cu builds", "background_runs", "warm_project_kernels")
        runs.start()


def _runs_every_test(config):
    """Whether the session collects every test of this folder, unselected: it names it, or a folder above it."""
    option = config.option
    if option.collectonly or option.keyword or option.markexpr or getattr(option, "lf", False) \
            or getattr(option, "deselect", None):
        return False
    here = config.invocation_params.dir
    named = [(here / str(arg).split("::")[0]).resolve() for arg in config.args]
    return any(folder.is_dir() and (folder == HERE or folder in HERE.parents) for folder in named)


def _an_exercise_check():
    """Whether this session is one of ``minilora exercises check``'s (tests/test_exercises.py runs one per exercise):
    a copy of the project whose kernels' text names the copy's own folder (``kernels.source``'s ``#line`` markers),
    so that none of the cache's builds is its: warming every kernel file in every build (~25 s of g++) beside a few
    marked tests that launch one or two of them was most of those sessions' time, and five of them ran per CI."""
    from minilora import exercises
    return exercises.REPORT_ENV in os.environ


def _builds_kernels(items):
    """Whether some collected test launches CUDA kernels on the emulator: it runs on the `emu` device (the `device`
    or `kernel_device` fixture), or its file imported the emulator or a name of it."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if any(isinstance(value, str) and value == "emu" for value in params.values()) \
                or "kernel_device" in getattr(item, "fixturenames", ()):
            return True
    return _some_file_imported(items, "minilora.emulator")


def _launches_project_kernels(items):
    """Whether some collected test launches minilora's own kernels (kernels/*.cu): it runs on the `kernel_device`
    fixture, or its file imported ``minilora.kernels`` or a name of it."""
    return any("kernel_device" in getattr(item, "fixturenames", ()) for item in items) \
        or _some_file_imported(items, "minilora.kernels")


def _some_file_imported(items, module_name):
    """Whether the test file of some of ``items`` holds the module ``module_name`` (once imported) or a name of it."""
    wanted, seen = sys.modules.get(module_name), set()
    if wanted is None:
        return False
    for item in items:
        module = getattr(item, "module", None)
        if module is None or id(module) in seen:
            continue
        seen.add(id(module))
        if any(value is wanted or getattr(value, "__module__", None) == module_name for value in vars(module).values()):
            return True
    return False


def warm_emulator_cache():
    """Build the CUDA emulator's runtime object and precompiled header of each build variant (for CUDA's default
    architecture) into the session's kernel cache, shared with every process of the session: the first test to
    launch in each variant built them in the main process (~25 s of CI's time on its empty cache)."""
    from minilora import emulator
    if not emulator.is_available():
        return
    source = 'extern "C" __global__ void warm(int* x) { x[threadIdx.x] = threadIdx.x; }'
    for variant in ("fast", "memcheck", "lockstep", "racecheck", "ucontext"):
        emulator.RawKernel(source, "warm", _variant=variant).compile()
    emulator.RawKernel(source, "warm", sanitize=True).compile()  # the sanitizer's build, AddressSanitizer's runtime


def warm_project_kernels():
    """Build each of minilora's kernel files (kernels/*.cu: ``minilora.kernels.KERNEL_FILES``) into the session's kernel
    cache, on the helper's core, right after the runtime (``warm_emulator_cache``), in each build the tests launch: the
    main process compiled each at its first launch, CI's cache being empty -- g++ on a few thousand lines of templated
    tiles per file and build, while the helper's core sat idle. A test that gets to a file before its build is done
    compiles it itself, as before (the cache's files are written atomically)."""
    from minilora import emulator, kernels
    if not emulator.is_available():
        return
    sources = [kernels.source(filename) for filename in kernels.KERNEL_FILES]  # the text kernels._module compiles
    plain = [emulator.RawModule(code=code).compile() for code in sources]  # kernels._module's build
    for code in sources:  # kernels.checking(sanitize=True)'s build: AddressSanitizer's
        emulator.RawModule(code=code, sanitize=True).compile()
    for code, module in zip(sources, plain):  # racecheck=True's build of a kernel (RawKernel._build_of): the file's
        emulator.RawKernel(code, module.kernel_names[0], _variant="racecheck").compile()


def build_emulator_modules(builds):
    """Compile each ``RawModule(**keywords)`` of ``builds`` [(keywords, changes to the environment)] into the session's
    kernel cache: a test file's big sources (its ``EMULATOR_BUILDS``, the keywords its tests build them with; the
    changes: MINILORA_EMU_MEMCHECK=1 where its tests launch under memcheck), built on the helper's core while the
    main process runs the files before it, which then finds them compiled (seconds of g++ each)."""
    from minilora import emulator
    if not emulator.is_available():
        return
    for keywords, changes in builds:
        with _environment_changed(changes):
            emulator.RawModule(**keywords).compile()


@contextlib.contextmanager
def _environment_changed(changes):
    saved = dict(os.environ)
    os.environ.update(changes)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def selected(items, module_name, test_name):
    """The collected ``items`` of the test function ``test_name`` in the test file ``module_name``."""
    return [item for item in items if getattr(getattr(item, "module", None), "__name__", None) == module_name
            and getattr(item, "originalname", None) == test_name]


def run_commands(commands, cwd, timeout):
    """[(exit code, stdout, stderr)] of each ``(argv, changes to the session's environment)`` of ``commands``,
    one after the other, in ``cwd``: a run for a test whose heavy part is a command (this module, with no
    imports of its own to wait for, is what the run's process imports). ``timeout``: each command's limit in
    seconds of an unloaded machine (``run_process``)."""
    return [(done.returncode, done.stdout, done.stderr) for done in (
        run_process(argv, env={**os.environ, **changes}, cwd=cwd, timeout=timeout) for argv, changes in commands)]


# A command's limit stretches with the machine's load, up to this many times its own: CI's two cores shared with
# another job (load 4) give a command half the time its limit was set for, and an MPI run's ranks, each stuck
# behind the other, much less. A deadlocked command still ends, at worst this many limits later.
MOST_STRETCH = 6


def run_process(argv, env=None, cwd=None, timeout=None, input=None):
    """``subprocess.run(argv, input=input, capture_output=True, text=True)`` with a limit that holds on a loaded
    machine and leaves no process behind. ``timeout`` is counted in seconds of a CPU the command can have: each
    second of wall time counts as 1 / (load per core) when the machine is busier than its cores (``os.getloadavg``),
    never past ``MOST_STRETCH`` times the limit. The command runs in a session of its own; when it exits, or
    runs past its limit, everything left in that session is killed (an MPI rank whose launcher ended, a
    worker of a DataLoader), and output goes to files, not pipes, so a grandchild holding one open cannot make
    the wait last forever. Past the limit: a RuntimeError naming the command, the time and the load, with the
    ends of its output (before, subprocess.run's TimeoutExpired after a fixed wall-clock time, which a loaded CI
    crossed, and mpirun's ranks left running). Every test's command with a limit runs here: a limit in wall seconds
    is a flaky test on CI's shared cores (tests/test_ci_time_r25.py checks that none is left)."""
    if timeout is None:
        raise TypeError("run_process needs a timeout: the seconds of CPU after which the command counts as stuck")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.TemporaryFile("w+") as stdin:
        stdin.write(input or "")
        stdin.seek(0)
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=stdin, stdout=out, stderr=err, text=True,
                                   start_new_session=True)
        try:
            waited = _wait_on_a_loaded_machine(process, timeout)
        finally:
            _kill_session(process)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if waited is not None:
        raise RuntimeError(f"{' '.join(map(str, argv))} ran past its limit of {timeout} s of CPU ({waited:.0f} s "
                           f"of wall time, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; stuck?); it "
                           f"was killed with every process it started.\nstdout: {stdout[-3000:]}\n"
                           f"stderr: {stderr[-3000:]}")
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def _wait_on_a_loaded_machine(process, timeout):
    """Wait for ``process`` to end; None if it did, else the wall time waited when it ran past ``timeout``."""
    start = last = time.monotonic()
    counted = 0.0
    while process.poll() is None:
        try:
            process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        busy = os.getloadavg()[0] / (os.cpu_count() or 1) if hasattr(os, "getloadavg") else 1.0
        counted += (now - last) / max(1.0, busy)
        last = now
        if process.poll() is None and (counted > timeout or now - start > MOST_STRETCH * timeout):
            return now - start
    return None


def _kill_session(process):
    """SIGKILL to every process still in ``process``'s session (its own group: ``start_new_session``), reap it, and
    wait until the group's last member has died (without process groups, not POSIX: the process alone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL) if hasattr(os, "killpg") else process.kill()
    process.wait()
    _wait_until_group_dead(process.pid)


def _wait_until_group_dead(group, most_seconds=30.0):
    """SIGKILL is delivered, not done: an orphan of the group dies when it is next scheduled, which on a loaded CI
    machine came after the caller had looked for it (a failed CI: ``pgrep`` still saw the killed ``sleep``). Wait
    until no live process is left in ``group``; a zombie waiting for init to reap it counts as dead."""
    deadline = time.monotonic() + most_seconds
    while _live_members(group) and time.monotonic() < deadline:
        time.sleep(0.01)


def _live_members(group):
    """The pids of the processes in process group ``group`` that have not exited (Linux's /proc; elsewhere, whether
    ``killpg(group, 0)`` still finds one)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError, AttributeError):
            return []
        return [group]
    live = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # (the name in parentheses may hold spaces)
        except (OSError, IndexError):
            continue  # (it ended while we looked)
        state, process_group = fields[0], int(fields[2])
        if process_group == group and state not in ("Z", "X"):
            live.append(int(stat.parent.name))
    return live


def _run_one_call(answer):
    """The process of one call (``BackgroundRuns._call``): the call from stdin, its outcome pickled to ``answer``."""
    sys.path.insert(1, str(HERE.parent))  # the repository, as for ``python -m pytest`` run there
    module_name, function_name, args = pickle.load(sys.stdin.buffer)
    try:
        outcome = (True, getattr(importlib.import_module(module_name), function_name)(*args))
    except Exception as error:  # noqa: BLE001  (handed to the test that takes the result)
        outcome = (False, error)
    try:
        data = pickle.dumps(outcome)
    except Exception:  # noqa: BLE001  (an exception that does not pickle: its type and words)
        data = pickle.dumps((False, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]}")))
    Path(answer + ".tmp").write_bytes(data)
    os.replace(answer + ".tmp", answer)


if __name__ == "__main__":
    _run_one_call(sys.argv[1])
