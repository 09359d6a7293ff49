"""Exercises: regions of the solution marked in the source, and the student copy built from them.

An exercise is a few lines of the real code, marked where they stand. In Python::

    # EXERCISE 1.2: <what to do, one line>
    # BEGIN SOLUTION
    <the solution>
    # END SOLUTION

and the same in CUDA with ``//`` comments. The number is ``chapter.item``; the chapter is the notebook
the exercise belongs to (1 = ``01_autograd``, ..., 8 = ``08_variants_and_diagnostics``), and tests
that check it carry the pytest marker ``ex<chapter>_<item>`` (``@pytest.mark.ex1_2``).

``minilora exercises build DIR`` copies the project (package, kernels, tests, notebooks, setup.py,
README) to ``DIR`` with each region replaced by a stub: in Python ``raise NotImplementedError("Exercise
1.2: ...")`` at the region's indentation, so the file still imports and only calling the unfinished
code fails; in CUDA a ``MINILORA_EXERCISE("...")`` statement that stops the kernel (a device-side
assertion -- ``KernelFault`` -- on the emulator, ``printf`` + ``__trap()`` on a GPU). The ``EXERCISE``
line stays above the stub, so the copy still says what to do. ``check`` runs the marked tests in one
pytest session and prints which exercises pass; ``list`` prints the exercises.

This module is also a pytest plugin (``-p minilora.exercises``): ``check`` loads it into its pytest
run to learn each test's markers and outcome.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Exercise", "ExerciseFormatError", "find_exercises", "stub_source", "build", "check",
           "marked_test_files", "marker_lines", "repo_root", "add_cli_arguments", "cli_main"]

# What a student copy holds (those that exist in the source tree), and where exercise regions live.
COPIED = ("minilora", "kernels", "tests", "notebooks", "setup.py", "setup.cfg", "pyproject.toml",
          "MANIFEST.in", "README.md", "LICENSE")
SCANNED = ("minilora", "kernels")
COMMENT = {".py": "#", ".cu": "//", ".cuh": "//"}
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info", ".pytest_cache",
                                 ".hypothesis", ".ipynb_checkpoints")
# This file explains the markers in its docstring; it holds no exercise of its own.
MACHINERY = "minilora/exercises.py"

CHAPTERS = {1: "01_autograd", 2: "02_transformer", 3: "03_memory_wall", 4: "04_lora_layer",
            5: "05_cuda_kernels", 6: "06_finetune", 7: "07_merge_and_serve",
            8: "08_variants_and_diagnostics"}

_HEADER = re.compile(r"^(\s*)(#|//) EXERCISE (\d+)\.(\d+): (\S.*?)\s*$")
_BEGIN = re.compile(r"^(\s*)(#|//) BEGIN SOLUTION\s*$")
_END = re.compile(r"^\s*(#|//) END SOLUTION\s*$")
_MARKER_USE = re.compile(r"pytest\.mark\.(ex\d+_\d+)\b")
_STUB = re.compile(r'^\s*(raise NotImplementedError\("|MINILORA_EXERCISE\(")Exercise \d+\.\d+: ')

# The CUDA stub needs this macro; build puts it after the file's opening comment.
CUDA_STUB_MACRO = """\
// ---- added by `minilora exercises build`: how an unfinished exercise stops its kernel ----
// On the emulator a failed device-side assertion (KernelFault, naming the exercise); on a GPU
// printf + __trap(), which fails the launch.
#ifdef __CUDA_EMU__
#define MINILORA_EXERCISE(msg) __emu::assert_fail(msg, __FILE__, __LINE__)
#else
#define MINILORA_EXERCISE(msg) do { printf("%s\\n", msg); __trap(); } while (0)
#endif
"""


class ExerciseFormatError(ValueError):
    """A marker that does not follow the format (the message names the file and line)."""


@dataclass(frozen=True)
class Exercise:
    """One marked region: its number, the file (relative, POSIX) and the line of its EXERCISE header."""

    chapter: int
    item: int
    path: str
    line: int
    statement: str
    solved: bool  # True: the solution region is there (BEGIN/END); False: a student copy
    stubbed: bool = False  # a student copy whose stub is still in place (the exercise is not started)
    begin: int = 0  # 0-based line indices of BEGIN and END (solved regions only)
    end: int = 0

    @property
    def number(self):
        return f"{self.chapter}.{self.item}"

    @property
    def marker(self):
        return f"ex{self.chapter}_{self.item}"

    @property
    def message(self):
        return f"Exercise {self.number}: {self.statement}"

    @property
    def notebook(self):
        return CHAPTERS.get(self.chapter, "")


# ==================================================================================================
# Finding the regions
# ==================================================================================================
def repo_root():
    """The source tree this minilora was imported from (a checkout or a student copy)."""
    return Path(__file__).resolve().parent.parent


def _source_files(root):
    for top in SCANNED:
        folder = Path(root) / top
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.suffix in COMMENT and "__pycache__" not in path.parts and rel != MACHINERY:
                yield path, rel


def parse_file(text, rel):
    """The exercises in one file's ``text``; ``ExerciseFormatError`` for a malformed marker."""
    comment = COMMENT[Path(rel).suffix]
    lines = text.splitlines()
    found, i = [], 0

    def fail(index, why):
        raise ExerciseFormatError(f"{rel}:{index + 1}: {why}")

    while i < len(lines):
        line = lines[i]
        if _BEGIN.match(line):
            fail(i, "BEGIN SOLUTION without an 'EXERCISE N.M: <what to do>' line right above it")
        if _END.match(line):
            fail(i, "END SOLUTION without a BEGIN SOLUTION before it")
        header = _HEADER.match(line)
        if not header:
            i += 1
            continue
        if header.group(2) != comment:
            fail(i, f"exercise markers in a {Path(rel).suffix} file start with {comment!r}")
        chapter, item, statement = int(header.group(3)), int(header.group(4)), header.group(5)
        if i + 1 < len(lines) and _BEGIN.match(lines[i + 1]):
            end = next((j for j in range(i + 2, len(lines)) if _END.match(lines[j]) or _BEGIN.match(lines[j])
                        or _HEADER.match(lines[j])), None)
            if end is None or not _END.match(lines[end]):
                fail(i + 1, f"BEGIN SOLUTION of exercise {chapter}.{item} has no END SOLUTION "
                            "(regions do not nest)")
            if end == i + 2:
                fail(i + 1, f"exercise {chapter}.{item} has an empty solution region")
            found.append(Exercise(chapter, item, rel, i + 1, statement, True, False, i + 1, end))
            i = end + 1
        else:
            stubbed = i + 1 < len(lines) and bool(_STUB.match(lines[i + 1]))
            found.append(Exercise(chapter, item, rel, i + 1, statement, False, stubbed))
            i += 1
    return found


def find_exercises(root=None, strict=True):
    """Every exercise under ``root`` (default: this tree), sorted by number.

    ``strict=False`` skips files with malformed markers instead of raising (for marker registration,
    which must not stop a test run).
    """
    root = Path(root) if root is not None else repo_root()
    found = []
    for path, rel in _source_files(root):
        text = path.read_text(encoding="utf-8")
        if "EXERCISE" not in text and "SOLUTION" not in text:
            continue
        try:
            found += parse_file(text, rel)
        except ExerciseFormatError:
            if strict:
                raise
    found.sort(key=lambda e: (e.chapter, e.item))
    for a, b in zip(found, found[1:]):
        if strict and a.number == b.number:
            raise ExerciseFormatError(f"exercise {a.number} is marked twice: {a.path}:{a.line} and "
                                      f"{b.path}:{b.line}")
    return found


def marker_lines(root=None):
    """``ex1_1: Exercise 1.1: ...`` lines for ``config.addinivalue_line("markers", ...)``."""
    return [f"{e.marker}: {e.message}" for e in find_exercises(root, strict=False)]


def marked_test_files(root):
    """``{marker: [test files using it]}`` for the test files under ``root/tests``."""
    out = {}
    for path in sorted((Path(root) / "tests").glob("test*.py")):
        for marker in set(_MARKER_USE.findall(path.read_text(encoding="utf-8"))):
            out.setdefault(marker, []).append(path)
    return out


# ==================================================================================================
# Stubbing
# ==================================================================================================
def _c_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stub_source(text, rel, exercises):
    """``text`` with the regions of ``exercises`` (all from this file) replaced by stubs."""
    lines = text.splitlines(keepends=True)
    cuda = COMMENT[Path(rel).suffix] == "//"
    for ex in sorted(exercises, key=lambda e: e.begin, reverse=True):  # bottom up: indices stay valid
        if not ex.solved:
            continue
        indent = _BEGIN.match(lines[ex.begin]).group(1)
        if cuda:
            stub = f"{indent}MINILORA_EXERCISE({_c_string(ex.message)});\n"
        else:
            stub = f"{indent}raise NotImplementedError({json.dumps(ex.message)})\n"
        lines[ex.begin:ex.end + 1] = [stub]
    out = "".join(lines)
    if cuda and any(e.solved for e in exercises):
        out = _insert_after_opening_comment(out, CUDA_STUB_MACRO)
    elif not cuda:
        try:
            compile(out, rel, "exec")
        except SyntaxError as err:
            raise ExerciseFormatError(f"{rel}: the stubbed file does not compile ({err}); an exercise region "
                                      "must hold whole statements of one block") from None
    return out


def _insert_after_opening_comment(text, block):
    lines = text.splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("//")),
              len(lines))
    return "".join(lines[:at] + ["\n" if at and lines[at - 1].strip() else "", block, "\n"] + lines[at:])


def _select(exercises, only):
    if not only:
        return exercises
    wanted = {str(n) for n in only}
    known = {e.number for e in exercises}
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(f"no exercise {', '.join(unknown)}; the exercises are "
                         f"{', '.join(e.number for e in exercises)}")
    return [e for e in exercises if e.number in wanted]


def build(dest, source=None, only=None, items=COPIED):
    """Write a student copy of ``source`` (default: this checkout) into ``dest``; returns the exercises stubbed.

    ``only``: stub just these exercise numbers (``["1.2"]``), leaving the other solutions in place.
    ``items``: which top-level entries to copy (tests copy less to stay fast). ``dest`` must not exist
    or be empty; the copy is assembled next to it and renamed into place, so it is never half written.
    The temporary copy is named as minilora's saves name theirs (``.DEST.minilora-<pid>-....tmp``), so the
    one a killed build left (a whole project copy) is removed by the next build of ``dest``
    (``checkpoint.remove_leftovers``), while a build still running in another process is left alone.
    """
    from .checkpoint import _UMASK, _temp_prefix, _writing, remove_leftovers
    source = Path(source) if source is not None else repo_root()
    dest = Path(dest)
    for needed in ("minilora", "kernels", "tests"):
        if not (source / needed).is_dir():
            raise FileNotFoundError(f"{source} has no {needed}/: building the exercises needs a source checkout "
                                    "of minilora (the installed wheel has no tests); pass --source")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} already exists and is not empty; choose a new folder")
    exercises = find_exercises(source)
    chosen = [e for e in _select(exercises, only) if e.solved]
    if not chosen:
        raise ValueError(f"{source} has no solution regions to stub (is it already a student copy?)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(dest)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=_temp_prefix(dest), suffix=".tmp"))
    try:
        with _writing(str(work)):  # (a build of the same folder in another thread leaves it alone meanwhile)
            _write_student_copy(source, work, items, chosen)
            work.chmod(0o777 & ~_UMASK)  # (mkdtemp makes a private 0700 folder; a copy is the usual kind)
            if dest.exists():
                dest.rmdir()  # empty, checked above
            os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return chosen


def _write_student_copy(source, work, items, chosen):
    """The ``items`` of ``source`` copied into the folder ``work``, the ``chosen`` exercises' regions stubbed."""
    for name in items:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=IGNORED)
        elif src.is_file():
            shutil.copy2(src, work / name)
    by_file = {}
    for ex in chosen:
        by_file.setdefault(ex.path, []).append(ex)
    for rel, exs in by_file.items():
        text = (source / rel).read_text(encoding="utf-8")
        (work / rel).write_text(stub_source(text, rel, exs), encoding="utf-8")


# ==================================================================================================
# Checking: one pytest run over the marked tests, this module as a plugin recording the outcomes
# ==================================================================================================
REPORT_ENV = "MINILORA_EXERCISES_REPORT"  # set in the pytest sessions ``check`` starts: where they report
_markers_of = {}   # nodeid -> [exercise markers], filled at collection (plugin side)
_outcomes = {}     # nodeid -> {"outcome": ..., "message": ...}


def pytest_collection_modifyitems(items):
    for item in items:
        marks = [m.name for m in item.iter_markers() if re.fullmatch(r"ex\d+_\d+", m.name)]
        if marks:
            _markers_of[item.nodeid] = marks


def pytest_runtest_logreport(report):
    if report.nodeid not in _markers_of or _outcomes.get(report.nodeid, {}).get("outcome") == "failed":
        return  # not an exercise test, or failed already (a teardown after that changes nothing)
    if report.failed or report.skipped or report.when == "call":
        _outcomes[report.nodeid] = {"outcome": "failed" if report.failed else report.outcome,
                                    "message": _short_message(report)}


def _short_message(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message.splitlines()[0] if crash.message else ""
    return str(report.longrepr or "").strip().splitlines()[-1] if report.longrepr else ""


def pytest_sessionfinish(session):
    path = os.environ.get(REPORT_ENV)
    if path:
        data = {nodeid: dict(_outcomes.get(nodeid, {"outcome": "not run", "message": ""}), markers=marks)
                for nodeid, marks in _markers_of.items()}
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)


def subprocess_env(root):
    """The environment for a pytest run in ``root``: ``root``'s minilora first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("MINILORA_CACHE_DIR", str(repo_root() / ".cache"))  # compiled kernels, keyed by content
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # No third-party pytest plugins: loading hypothesis' alone costs more than most exercises' tests.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return env


@dataclass
class Result:
    exercise: Exercise
    passed: int
    total: int    # tests that ran (skipped ones, e.g. on a device that is not enabled, do not count)
    skipped: int
    status: str   # "passed", "not started", "needs X.Y", "failed", "skipped", "no tests"
    message: str  # the first failure's one-line error (one that does not name another exercise, if any)
    messages: list  # every failure's one-line error

    @property
    def tests(self):
        return f"{self.passed}/{self.total}" + (f" ({self.skipped} skipped)" if self.skipped else "")


def check(root=None, only=None):
    """Run every marked test under ``root`` once; returns one ``Result`` per exercise."""
    root = Path(root).resolve() if root is not None else repo_root()
    exercises = _select(find_exercises(root), only)
    files = marked_test_files(root)
    wanted = [e for e in exercises if e.marker in files]
    outcomes = {}
    if wanted:
        test_files = sorted({str(f) for e in wanted for f in files[e.marker]})
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.json"
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "minilora.exercises",
                   "-m", " or ".join(e.marker for e in wanted), *test_files]
            env = dict(subprocess_env(root), **{REPORT_ENV: str(report)})
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
            if proc.returncode not in (0, 1, 5) or not report.exists():  # 0 passed, 1 failed, 5 none ran
                raise RuntimeError(f"pytest did not run (exit code {proc.returncode}):\n"
                                   f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
            outcomes = json.loads(report.read_text(encoding="utf-8"))
    return [_result(e, outcomes) for e in exercises]


def _blocker(message, ex):
    """The other exercise whose stub raised ``message`` (that one is to do first), or None."""
    match = re.search(r"Exercise (\d+\.\d+):", message)
    return match.group(1) if match and match.group(1) != ex.number else None


def _result(ex, outcomes):
    mine = [o for o in outcomes.values() if ex.marker in o["markers"]]
    ran = [o for o in mine if o["outcome"] != "skipped"]
    passed = sum(o["outcome"] == "passed" for o in ran)
    failed = [o for o in ran if o["outcome"] != "passed"]
    own = [o for o in failed if not _blocker(o["message"], ex)]
    message = (own or failed or [{"message": ""}])[0]["message"]
    if not mine:
        status = "no tests"
    elif not failed:
        status = "passed" if passed else "skipped"
    elif ex.stubbed:
        status = "not started"
    elif own:
        status = "failed"
    else:
        status = f"needs {_blocker(failed[0]['message'], ex)}"
    return Result(ex, passed, len(ran), len(mine) - len(ran), status, message, [o["message"] for o in failed])


# ==================================================================================================
# The command line
# ==================================================================================================
def add_cli_arguments(parser, name=None):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="list the exercises (number, marker, file, what to do)")
    p.add_argument("dir", nargs="?", help="a source tree or student copy (default: this minilora)")
    p = sub.add_parser("build", help="write a student copy with the solutions replaced by stubs")
    p.add_argument("dir", help="the folder to create (must not exist, or be empty)")
    p.add_argument("--only", action="append", metavar="N.M",
                   help="stub only this exercise (repeatable; CI uses it to prove each exercise's tests)")
    p.add_argument("--source", help="the minilora checkout to copy (default: the one this minilora runs from)")
    p = sub.add_parser("check", help="run each exercise's tests and show which pass")
    p.add_argument("dir", nargs="?", help="the student copy (default: the current folder if it is a "
                                          "minilora tree, else the installed minilora's)")
    p.add_argument("--only", action="append", metavar="N.M", help="check only this exercise (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="also show the first error of each failure")


def _state(ex):
    return "solution" if ex.solved else "stub" if ex.stubbed else "your code"


def _default_tree():
    here = Path.cwd()
    return here if (here / "minilora").is_dir() and (here / "tests").is_dir() else repo_root()


def _table(rows, header):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    return "\n".join(fmt.format(*map(str, r)) for r in [header] + rows)


def cli_main(args):
    if args.action == "list":
        root = Path(args.dir) if args.dir else repo_root()
        rows = [(e.number, e.marker, e.notebook, f"{e.path}:{e.line}", _state(e), e.statement)
                for e in find_exercises(root)]
        print(_table(rows, ("exercise", "marker", "notebook", "file", "state", "what to do")))
        return 0
    if args.action == "build":
        from .cli import UsageError, output_folder
        # (the copy is assembled beside DIR: a parent that cannot hold it is found now, not as the temporary
        # copy's own traceback; a DIR that is there and not empty, or a source that is no checkout, is the user's)
        output_folder(os.path.dirname(os.path.abspath(args.dir)), f"{args.dir}: its folder", what="it")
        try:
            chosen = build(args.dir, source=args.source, only=args.only)
        except (FileExistsError, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from None
        print(f"wrote a student copy to {args.dir} with {len(chosen)} exercise(s) stubbed: "
              f"{', '.join(e.number for e in chosen)}")
        print(f"next:  pip install -e {args.dir}  &&  cd {args.dir}  &&  minilora exercises check\n"
              f"       (what to do: {Path(args.dir) / 'notebooks' / 'EXERCISES.md'})")
        return 0
    root = Path(args.dir) if args.dir else _default_tree()
    results = check(root, only=args.only)
    rows = []
    for r in results:
        e = r.exercise
        note = r.message if (args.verbose and r.status not in ("passed", "not started")) else e.statement
        rows.append((e.number, r.status, r.tests, e.path, note))
    last = "what to do / first error" if args.verbose else "what to do"
    print(_table(rows, ("exercise", "status", "tests", "file", last)))
    done = sum(r.status == "passed" for r in results)
    print(f"\n{done} of {len(results)} exercises pass  (one exercise's tests:  python -m pytest -m ex1_1 tests)")
    return 0 if done == len(results) else 1
