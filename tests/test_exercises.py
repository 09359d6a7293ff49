"""The exercise machinery (minilora/exercises.py), and the proof that the exercise tests test the exercises.

* every exercise has marked tests, a registered marker and an entry in notebooks/EXERCISES.md;
* for every exercise, a copy of the project with ONLY that region stubbed fails every one of that
  exercise's marked tests, with the stub's own error (so no marked test passes without the region);
* the full student copy builds, compiles and imports, and its stubs raise only when called; the CUDA
  stubs trap on the emulator (in the per-exercise runs) and compile to a trap with nvcc (where installed);
* the solution passes everything marked: that is the normal test run (tests/test_exercises_*.py).

Copies hold only minilora/, kernels/ and tests/ and are imported through PYTHONPATH, not installed;
each stubbed copy runs its marked tests in one pytest subprocess (``exercises.check``).
"""
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import background_runs
import minilora as ml
from minilora import exercises
from minilora.exercises import ExerciseFormatError, find_exercises, parse_file, stub_source

ROOT = exercises.repo_root()
EXERCISES = find_exercises(ROOT)
LIGHT_COPY = ("minilora", "kernels", "tests")

# These tests are about the solution tree; a student copy (every region a stub) has nothing to prove.
pytestmark = pytest.mark.skipif(not any(e.solved for e in EXERCISES),
                                reason="a student copy: the exercise machinery is tested on the solution")


def _emu_missing(ex):
    """A CUDA exercise is tested on the emulator, which needs g++."""
    return ex.path.endswith(".cu") and not next(d for d in ml.all_devices() if d.name == "emu").enabled()


# ---- the table of exercises ------------------------------------------------------------------------
def test_exercises_cover_what_the_issue_asks():
    assert len(EXERCISES) >= 12
    assert all(e.solved for e in EXERCISES), "the checkout must hold every solution"
    files = {e.path for e in EXERCISES}
    for needed in ("minilora/ops/elementwise.py", "minilora/ops/matmul.py", "minilora/ops/reduce.py",
                   "minilora/ops/nn.py", "minilora/ops/lora.py", "minilora/lora/layers.py",
                   "minilora/optim/adam.py", "kernels/lora_forward.cu", "kernels/adamw.cu"):
        assert needed in files, f"no exercise in {needed}"
    assert set(e.chapter for e in EXERCISES) <= set(exercises.CHAPTERS)


def test_every_exercise_has_marked_tests_and_every_marker_an_exercise():
    used = exercises.marked_test_files(ROOT)
    markers = {e.marker for e in EXERCISES}
    assert sorted(markers - set(used)) == [], "exercises without tests"
    assert sorted(set(used) - markers) == [], "markers of exercises that do not exist"


def test_markers_are_registered(pytestconfig):
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert {e.marker for e in EXERCISES} <= registered


def test_exercises_md_lists_every_exercise():
    text = (ROOT / "notebooks" / "EXERCISES.md").read_text(encoding="utf-8")
    for e in EXERCISES:
        assert re.search(rf"\b{re.escape(e.number)}\b", text), f"EXERCISES.md does not mention exercise {e.number}"
        assert e.marker in text and e.path in text, f"EXERCISES.md: exercise {e.number} needs {e.marker}, {e.path}"


def test_solution_regions_hold_math_only():
    """What a learner writes is the math: the thread splitting (minilora.parallel), direct BLAS calls
    (minilora.blas) and size-dependent fast paths (minilora.fastmath) sit outside the regions, in the op
    that calls the region's function."""
    for e in EXERCISES:
        lines = (ROOT / e.path).read_text(encoding="utf-8").splitlines()[e.begin + 1:e.end]
        for offset, line in enumerate(lines, start=e.begin + 2):
            assert not re.search(r"\b(parallel|blas|fastmath)\.", line), \
                f"exercise {e.number} ({e.path}:{offset}) calls speed machinery inside its region: {line.strip()}"


# ---- the marker format --------------------------------------------------------------------------------
GOOD = """\
def f(x):
    y = 2
    # EXERCISE 9.1: return x times y
    # BEGIN SOLUTION
    if x:
        return x * y
    return 0
    # END SOLUTION
"""


def test_stub_keeps_the_header_and_the_indentation():
    [ex] = parse_file(GOOD, "m.py")
    assert (ex.number, ex.marker, ex.statement, ex.solved) == ("9.1", "ex9_1", "return x times y", True)
    out = stub_source(GOOD, "m.py", [ex])
    assert out.splitlines()[2:] == ["    # EXERCISE 9.1: return x times y",
                                    '    raise NotImplementedError("Exercise 9.1: return x times y")']
    namespace = {}
    exec(compile(out, "m.py", "exec"), namespace)
    with pytest.raises(NotImplementedError, match="Exercise 9.1"):
        namespace["f"](3)
    [stub] = parse_file(out, "m.py")  # a student copy still lists its exercises
    assert (stub.number, stub.solved, stub.stubbed) == ("9.1", False, True)
    assert parse_file(out.replace("raise NotImplementedError", "return  # "), "m.py")[0].stubbed is False


def test_cuda_stub_defines_its_trap():
    src = "// kernel.cu\n#include \"x.cuh\"\n__device__ void f(float& p) {\n    // EXERCISE 9.2: double p\n" \
          "    // BEGIN SOLUTION\n    p *= 2;\n    // END SOLUTION\n}\n"
    out = stub_source(src, "kernels/k.cu", parse_file(src, "kernels/k.cu"))
    assert 'MINILORA_EXERCISE("Exercise 9.2: double p");' in out
    assert out.index("#define MINILORA_EXERCISE") < out.index("#include") and "p *= 2" not in out


@pytest.mark.parametrize("text, why", [
    ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n", "without an 'EXERCISE"),
    ("# EXERCISE 1.1: a\n# BEGIN SOLUTION\nx = 1\n", "no END SOLUTION"),
    ("# EXERCISE 1.1: a\n# BEGIN SOLUTION\n# EXERCISE 1.2: b\n# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n"
     "# END SOLUTION\n", "no END SOLUTION"),
    ("# EXERCISE 1.1: a\n# BEGIN SOLUTION\n# END SOLUTION\n", "empty solution"),
    ("x = 1\n# END SOLUTION\n", "without a BEGIN"),
    ("// EXERCISE 1.1: a\n// BEGIN SOLUTION\nx = 1\n// END SOLUTION\n", "start with '#'"),
])
def test_malformed_markers_name_file_and_line(text, why):
    with pytest.raises(ExerciseFormatError, match=re.escape(why)) as err:
        parse_file(text, "pkg/m.py")
    assert "pkg/m.py:" in str(err.value)


def test_stub_that_breaks_the_syntax_is_refused():
    text = "x = (1 +\n# EXERCISE 1.1: a\n# BEGIN SOLUTION\n     2)\n# END SOLUTION\n"  # a region inside ( )
    with pytest.raises(ExerciseFormatError, match="does not compile"):
        stub_source(text, "m.py", parse_file(text, "m.py"))


def test_build_refuses_unknown_exercises_and_non_empty_folders(tmp_path):
    with pytest.raises(ValueError, match="no exercise 99.9"):
        exercises.build(tmp_path / "copy", only=["99.9"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError):
        exercises.build(tmp_path / "full", only=[EXERCISES[0].number])


def test_build_only_stubs_the_chosen_exercises(tmp_path, capsys):
    from minilora.cli import main
    first, last = EXERCISES[0].number, EXERCISES[-1].number
    assert main(["exercises", "build", str(tmp_path / "copy"), "--only", first, "--only", last]) == 0
    assert f"2 exercise(s) stubbed: {first}, {last}" in capsys.readouterr().out
    stubbed = {e.number for e in find_exercises(tmp_path / "copy") if e.stubbed}
    solved = {e.number for e in find_exercises(tmp_path / "copy") if e.solved}
    assert stubbed == {first, last} and solved == {e.number for e in EXERCISES} - {first, last}


# ---- the student copy --------------------------------------------------------------------------------------
def test_student_copy_builds_and_imports(tmp_path):
    copy = tmp_path / "student"
    out = subprocess.run([sys.executable, "-m", "minilora", "exercises", "build", str(copy)],
                         capture_output=True, text=True, env=exercises.subprocess_env(ROOT))
    assert out.returncode == 0, out.stderr
    assert (copy / "setup.py").is_file() and (copy / "notebooks" / "EXERCISES.md").is_file()
    for path in list(copy.rglob("*.py")) + list(copy.rglob("*.cu")):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".py":
            compile(text, str(path), "exec")
        rel = path.relative_to(copy).as_posix()
        if rel.startswith(("minilora/", "kernels/")) and rel != exercises.MACHINERY:
            assert "BEGIN SOLUTION" not in text, f"{rel} still holds a solution"
    stubs = find_exercises(copy)
    assert [e.number for e in stubs] == [e.number for e in EXERCISES]
    assert all(e.stubbed and not e.solved for e in stubs)
    # Import every module of the copy (not the checkout's), then call one stub.
    probe = textwrap.dedent("""
        import importlib, pkgutil, sys
        import numpy as np
        import minilora
        assert minilora.__file__.startswith(sys.argv[1]), minilora.__file__
        for m in pkgutil.walk_packages(minilora.__path__, "minilora."):
            if not m.name.endswith("__main__"):  # that one runs the command line
                importlib.import_module(m.name)
        from minilora.ops import unbroadcast
        try:
            unbroadcast(np.ones((2, 3)), (3,))
        except NotImplementedError as err:
            print(err)
    """)
    ran = subprocess.run([sys.executable, "-c", probe, str(copy)], capture_output=True, text=True,
                         cwd=tmp_path, env=exercises.subprocess_env(copy))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("Exercise 1.1: ")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_stubs_compile_to_a_trap_with_nvcc(tmp_path):
    """On a GPU the stub is printf + __trap(): nvcc must accept it, and the kernel must really trap."""
    cuda = [e for e in EXERCISES if e.path.endswith(".cu")]
    copy = tmp_path / "copy"
    exercises.build(copy, only=[e.number for e in cuda], items=LIGHT_COPY)
    for path in sorted({e.path for e in cuda}):
        ptx = tmp_path / (Path(path).stem + ".ptx")
        done = subprocess.run(["nvcc", "-ptx", "-arch=sm_80", "-I", str(copy / "kernels"), "-o", str(ptx),
                               str(copy / path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "trap;" in ptx.read_text() and "vprintf" in ptx.read_text(), f"{path}: the stub does not trap"


def test_list_and_check_on_the_command_line(capsys):
    from minilora.cli import main
    assert main(["exercises", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(f"{e.path}:{e.line}" in listing for e in EXERCISES)
    assert main(["exercises", "check", str(ROOT), "--only", "3.1"]) == 0
    table = capsys.readouterr().out
    assert re.search(r"^3\.1 +passed +1/1 +minilora/memory\.py", table, re.M), table
    assert "1 of 1 exercises pass" in table


def _check_with_only(base, ex):
    """Build a copy with only ``ex`` stubbed and run its marked tests there (one pytest subprocess)."""
    copy = base / ex.number
    exercises.build(copy, only=[ex.number], items=LIGHT_COPY)
    [result] = exercises.check(copy, only=[ex.number])
    return result


def _check_each(base, chosen):
    """``{number: _check_with_only's result, or its exception}`` for each exercise of ``chosen``, in turn."""
    results = {}
    for ex in chosen:
        try:
            results[ex.number] = _check_with_only(base, ex)
        except Exception as error:  # noqa: BLE001  (that exercise's test fails with it, not the others')
            results[ex.number] = error
    return results


def _halves(items):
    """The selected exercises' runs in two halves of about the same length, CUDA exercises first: their
    copies compile kernels (5.1 is the longest run by far), and started last they would leave one run alone."""
    chosen = [item.callspec.params["ex"] for item in
              background_runs.selected(items, __name__, "test_stubbing_one_region_fails_every_test_of_that_exercise")]
    chosen = sorted((ex for ex in chosen if not _emu_missing(ex)), key=lambda ex: not ex.path.endswith(".cu"))
    return [half for half in (tuple(chosen[0::2]), tuple(chosen[1::2])) if half]


def start_background_runs(items, runs):
    """``_check_with_only`` for the selected exercises: two processes of ``_check_each`` on the session's
    helper thread (tests/background_runs.py), each running its half of the exercises one at a time (a
    pytest subprocess each), on the core the main process leaves idle."""
    for half in _halves(items):
        if _key(half) not in runs:
            runs.submit(_key(half), __name__, "_check_each", runs.folder("one-stub"), half)


def _key(half):
    return "one stub", tuple(ex.number for ex in half)


@pytest.fixture(scope="module")
def one_stub_runs(request, background):
    """``one_stub_runs(number)``: ``_check_with_only``'s result for that exercise (started by
    ``start_background_runs``; a file run on its own starts one half here)."""
    start_background_runs(request.session.items, background)

    def result(number):
        [half] = [half for half in _halves(request.session.items) if number in {ex.number for ex in half}]
        outcome = background.result(_key(half))[number]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    return result


@pytest.mark.parametrize("ex", EXERCISES, ids=[e.number for e in EXERCISES])
def test_stubbing_one_region_fails_every_test_of_that_exercise(one_stub_runs, ex):
    if _emu_missing(ex):
        pytest.skip(f"exercise {ex.number} is CUDA and the emulator is not enabled")
    result = one_stub_runs(ex.number)
    assert result.total > 0, f"exercise {ex.number}: no marked test ran"
    assert result.passed == 0, (f"exercise {ex.number}: {result.passed} of {result.total} marked tests pass "
                                "without the solution -- they do not test the exercise")
    assert result.status == "not started"
    for message in result.messages:  # every marked test reached the stub: it failed with the stub's error
        assert f"Exercise {ex.number}:" in message, f"exercise {ex.number}: a marked test failed otherwise: {message}"
