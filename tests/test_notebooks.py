"""The teaching notebooks run, and the committed ones are what their sources produce.

* every committed notebook (``notebooks/NN_*.ipynb``) was built from ``notebooks/src/NN_*.py`` and
  executed: every code cell has run, there is no error output, and there are plots;
* every notebook runs again from scratch with nbclient (kernel ``python3``), in a temporary working
  folder so that what it writes (adapter folders, checkpoints) never lands in the repository; any
  error fails, and a notebook gets 120 seconds in all (``notebooks/build_notebooks.py``'s ``TIMEOUT``).
  The runs start with the session, one at a time on a helper thread (tests/background_runs.py: each
  kernel is a process of its own, with one BLAS thread and one minilora thread, on the core the
  one-test-at-a-time main process leaves idle), so they cost CI little of its time. The student
  copy's run of notebook 1 (below) is one of them.
* numbers a notebook quotes from a file it cannot run (notebook 5's H200 table) are that file's
  (``benchmarks/RESULTS.md``); the notebooks assert the numbers they compute themselves;
* the student copy (``minilora exercises build``) shows no line of any solution in its notebooks --
  cells or committed outputs -- and, run there, notebook 1 stops at its first stub with the
  exercise's own message.

The run tests need nbclient and ipykernel (the ``test`` extras) and are skipped without them.
"""
import importlib.util
import os
from pathlib import Path

import pytest

import background_runs

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
EXPECTED = ["01_autograd", "02_transformer", "03_memory_wall", "04_lora_layer", "05_cuda_kernels",
            "06_finetune", "07_merge_and_serve", "08_variants_and_diagnostics", "09_distributed",
            "10_adalora_and_composition"]


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOK_DIR / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _load_builder()
NOTEBOOKS = [pytest.param(name, id=name) for name in EXPECTED]


def _read(name):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(str(NOTEBOOK_DIR / f"{name}.ipynb"), as_version=4)


def test_every_notebook_has_a_source_and_a_committed_notebook():
    assert [s.stem for s in builder.sources()] == EXPECTED
    missing = [name for name in EXPECTED if not (NOTEBOOK_DIR / f"{name}.ipynb").is_file()]
    assert not missing, f"not built: {missing} (run python notebooks/build_notebooks.py)"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_built_from_its_source(name):
    pytest.importorskip("nbformat")
    assert builder.code_cells_match(NOTEBOOK_DIR / f"{name}.ipynb", builder.SRC / f"{name}.py"), (
        f"notebooks/{name}.ipynb differs from notebooks/src/{name}.py: rebuild it with "
        f"python notebooks/build_notebooks.py {name[:2]}")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_was_executed_without_errors(name):
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    not_run = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None]
    assert not not_run, f"{name}: cells {not_run} were never executed (rebuild the notebook)"
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name}: error outputs in cells {errors}"
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{name}: cells were not run in order once ({counts})"
    assert sum(bool(c.outputs) for c in code) >= len(code) // 2, f"{name}: most code cells have no output"
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images >= 1, f"{name}: no plot in the committed outputs"


def _skip_reason(name):
    """Why this notebook cannot run here, or None."""
    for module in ("nbclient", "nbformat", "ipykernel"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[test]')"
    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not installed"
    if name == "05_cuda_kernels":
        from minilora.emulator import is_available
        if not is_available():
            return "the CUDA emulator needs a C++ compiler (g++), which is not on PATH"
    return None


def _kernel_env():
    """builder.kernel_env() with one minilora thread too (unless set otherwise): the kernel runs beside the
    tests (tests/background_runs.py), on the one core they leave idle."""
    env = builder.kernel_env()
    env.setdefault("MINILORA_NUM_THREADS", "1")
    return env


def _run_notebook(name, workdir):
    """Execute the committed notebook ``name`` in ``workdir``; returns the seconds it took."""
    return builder.execute(_read(name), workdir, timeout=builder.TIMEOUT, env=_kernel_env())


def _run_in_student_copy(copy):
    """Execute the student copy's notebook 1 with the copy's (stubbed) minilora first on the path."""
    import nbformat
    env = _kernel_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(copy), env.get("PYTHONPATH")]))
    nb = nbformat.read(str(copy / "notebooks" / "01_autograd.ipynb"), as_version=4)
    return builder.execute(nb, copy, timeout=builder.TIMEOUT, env=env)


STUDENT_RUN = "student copy: 01_autograd"
# Started first, so that the long runs are not left for the end (each takes 20-35 s of CI's time; the others
# under 10 s). Only the order of the runs depends on it: an out-of-date list costs seconds, not a check.
SLOWEST_FIRST = ("06_finetune", "08_variants_and_diagnostics", "04_lora_layer", "10_adalora_and_composition",
                 "05_cuda_kernels")


def _student_copy_run(folder):
    """A fresh student copy in ``folder``/copy (built as ``student_copy``), and its notebook 1's run."""
    return _run_in_student_copy(_build_student_copy(folder))


STUDENT_RUN_FOLDER = {}  # the student copy run's folder, once submitted


def start_background_runs(items, runs):
    """The selected notebook runs that can run here -- ``_run_notebook`` for each notebook,
    ``_student_copy_run`` under ``STUDENT_RUN`` -- on the session's helper thread
    (tests/background_runs.py): each kernel is a process of its own, with one BLAS thread and one
    minilora thread, on the core the main process leaves idle."""
    names = [item.callspec.params["name"] for item in background_runs.selected(items, __name__, "test_notebook_runs")]
    names.sort(key=lambda name: SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST))
    for name in names:
        if not _skip_reason(name) and ("notebook", name) not in runs:
            runs.submit(("notebook", name), __name__, "_run_notebook", name, runs.folder(name))
    if background_runs.selected(items, __name__, "test_student_copy_notebook_stops_at_the_first_unsolved_exercise") \
            and not _skip_reason("01_autograd") and ("notebook", STUDENT_RUN) not in runs:
        STUDENT_RUN_FOLDER[STUDENT_RUN] = runs.folder("student")
        runs.submit(("notebook", STUDENT_RUN), __name__, "_student_copy_run", STUDENT_RUN_FOLDER[STUDENT_RUN])


@pytest.fixture(scope="module")
def notebook_runs(request, background):
    """``notebook_runs(name)``: the seconds of the notebook's run, or its error (started by
    ``start_background_runs``; a file run on its own starts them here)."""
    start_background_runs(request.session.items, background)
    return lambda name: background.result(("notebook", name))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, notebook_runs):
    reason = _skip_reason(name)
    if reason:
        pytest.skip(reason)
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from minilora.models import BASE_DIR
    if name not in ("01_autograd", "05_cuda_kernels"):
        assert os.path.isfile(os.path.join(BASE_DIR, "config.json")), \
            f"{name} needs the shipped base model, but {BASE_DIR} has no config.json"
    try:
        seconds = notebook_runs(name)
    except CellExecutionError as err:
        pytest.fail(f"{name}: a cell raised:\n{err}", pytrace=False)
    except (CellTimeoutError, DeadKernelError) as err:
        pytest.fail(f"{name}: did not finish within {builder.TIMEOUT} s ({type(err).__name__}: {err})",
                    pytrace=False)
    assert seconds < builder.TIMEOUT


# ------------------------------------------------------------------------------------------------
# The student copy (``minilora exercises build``): no solution in any notebook, and a clear stop
# ------------------------------------------------------------------------------------------------
def _solution_lines():
    """``{code line: exercise number}`` for every line of code of 20+ characters inside a solution
    region (comments stripped): lines distinctive enough that finding one in a notebook means the
    notebook shows (part of) a solution."""
    import re
    from minilora.exercises import find_exercises
    lines = {}
    for ex in find_exercises(ROOT):
        if not ex.solved:
            continue
        path = ROOT / ex.path
        for line in path.read_text(encoding="utf-8").splitlines()[ex.begin + 1:ex.end]:
            if path.suffix in (".cu", ".cuh"):
                code = line.split("//")[0].strip()
            else:
                code = re.sub(r"(^|\s)#.*$", "", line).strip()
            if len(code) >= 20:
                lines[code] = f"{ex.chapter}.{ex.item}"
    return lines


def _notebook_text(nb):
    """Every cell's source and every output's text (streams, results, tracebacks) of a notebook."""
    parts = []
    for cell in nb.cells:
        parts.append(cell.source)
        for out in cell.get("outputs", []):
            text = out.get("text", "")
            parts.append(text if isinstance(text, str) else "".join(text))
            parts.append(str(out.get("data", {}).get("text/plain", "")))
            parts.append("\n".join(out.get("traceback", [])))
    return "\n".join(parts)


def _solutions_shown(text, solution_lines):
    return sorted({f"exercise {number}: {code}" for code, number in solution_lines.items() if code in text})


def _build_student_copy(folder):
    from minilora.exercises import build
    dest = folder / "copy"
    build(dest, items=("minilora", "kernels", "notebooks"))
    return dest


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory):
    return _build_student_copy(tmp_path_factory.mktemp("student"))


# A block of 8 MiB: 1 where glibc hands it out by mmap (its default), 0 where it comes from the heap
_MMAPPED_BLOCKS = r"""
import ctypes
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblks
libc.malloc(8 << 20)
print(libc.mallinfo2().hblks - before)
"""


def test_notebook_kernels_start_with_malloc_keeping_freed_memory():
    """The kernels are all minilora's, as ``minilora train``'s process: glibc keeps freed memory for the next op
    (parallel.keep_freed_memory's settings, which glibc reads from the environment at start), not handing each
    op's arrays back to the OS to fault their pages in again (17% of notebook 8's CPU time)."""
    import sys
    if not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None:
        pytest.skip("glibc's malloc settings")
    plain = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    for env, mmapped in ((plain, "1"), (builder.kernel_env(), "0")):
        done = background_runs.run_process([sys.executable, "-c", _MMAPPED_BLOCKS], env=env, timeout=60)
        assert done.stdout.strip() == mmapped, (done.stdout, done.stderr)  # (the first: the probe can tell)


def test_solution_detector_sees_a_solution_line():
    """The check below can fail: a notebook cell holding one line of a solution is caught."""
    nbformat = pytest.importorskip("nbformat")
    lines = _solution_lines()
    assert len(lines) > 20, "too few solution lines found: are the exercise regions still marked?"
    code, number = next(iter(lines.items()))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"print('hello')\n{code}\n")])
    assert _solutions_shown(_notebook_text(nb), lines) == [f"exercise {number}: {code}"]


def test_student_copy_notebooks_show_no_solution(student_copy):
    """No line of any solution appears in the student copy's notebooks: not in a cell, not in a
    committed output (a cell that printed a kernel's source once showed exercise 5.1's answer)."""
    nbformat = pytest.importorskip("nbformat")
    lines = _solution_lines()
    shown = {}
    for path in sorted((student_copy / "notebooks").glob("*.ipynb")):
        found = _solutions_shown(_notebook_text(nbformat.read(str(path), as_version=4)), lines)
        if found:
            shown[path.name] = found
    for path in sorted((student_copy / "notebooks" / "src").glob("*.py")):
        found = _solutions_shown(path.read_text(encoding="utf-8"), lines)
        if found:
            shown[f"src/{path.name}"] = found
    assert not shown, f"solutions visible in the student copy: {shown}"


def test_student_copy_notebook_stops_at_the_first_unsolved_exercise(notebook_runs):
    """Run in the student copy (its stubbed minilora first on the path), notebook 1 stops with the
    stub's NotImplementedError, which names the exercise to do."""
    reason = _skip_reason("01_autograd")
    if reason:
        pytest.skip(reason)
    from nbclient.exceptions import CellExecutionError
    with pytest.raises(CellExecutionError) as info:
        notebook_runs(STUDENT_RUN)
    message = str(info.value)
    assert "NotImplementedError" in message and "Exercise 1." in message, message[-2000:]
    copy = STUDENT_RUN_FOLDER[STUDENT_RUN] / "copy"
    assert str(copy) in message, "the notebook did not import the student copy's minilora"


# ------------------------------------------------------------------------------------------------
# Numbers a notebook quotes from a file it cannot run: the H200 table of notebook 5
# ------------------------------------------------------------------------------------------------
def _results_forward_rows():
    """``{(r, path): (ms, vs_base)}`` from the first table of benchmarks/RESULTS.md (the LoRA forward,
    M = 8192, K = N = 4096, float32)."""
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    table = text.split("## LoRA forward:", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[0].isdigit():
            rows[int(cells[0]), cells[1]] = (float(cells[2]), float(cells[6].rstrip("x")))
    return rows


def _notebook_table_rows(text):
    """``{version: (time cell, ratio cell)}`` of the markdown table in notebook 5's source."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.lstrip("# ").strip().strip("|").split("|")]
        if len(cells) == 4 and (cells[0].startswith("v") or cells[0] == "unfused") and cells[2].endswith("ms"):
            rows[cells[0]] = (cells[2], cells[3])
    return rows


def test_notebook_5_quotes_the_measured_h200_table():
    """Notebook 5's table of kernel versions on an H200 shows benchmarks/RESULTS.md's numbers: the time
    at r = 16 (0.1 ms) and the range of "vs base GEMM" over r = 8, 16, 64. A new benchmark run that
    changes them fails here until the notebook says the same."""
    results = _results_forward_rows()
    shown = _notebook_table_rows((builder.SRC / "05_cuda_kernels.py").read_text(encoding="utf-8"))
    paths = {"v2": "fused v2", "v3": "fused v3", "v4": "fused v4", "v5": "fused v5",
             "unfused": "unfused (PEFT's 3 GEMMs + add)"}
    assert set(shown) == set(paths), shown
    for version, path in paths.items():
        ratios = [results[r, path][1] for r in (8, 16, 64)]
        expected = (f"{results[16, path][0]:.1f} ms", f"{min(ratios):.2f}-{max(ratios):.2f}x")
        assert shown[version] == expected, f"{version}: the notebook shows {shown[version]}, RESULTS.md gives {expected}"
    base = results[16, "base GEMM (cuBLAS)"][0]
    source = (builder.SRC / "05_cuda_kernels.py").read_text(encoding="utf-8")
    assert f"alone, {base:.1f} ms" in source and f"base_ms, unfused_ms = 4.8e12, {base}, " \
        f"{results[16, paths['unfused']][0]}" in source and f"v5_ms = {results[16, 'fused v5'][0]}" in source


def test_notebook_table_reader_sees_a_wrong_number():
    """The check above can fail: a row with a stale time is read as such."""
    rows = _notebook_table_rows("# | v2 | 16 x 16 tiles | 45.7 ms | 8.4x |\n# | v3 | more | 9.4 ms | 1.67-1.72x |")
    assert rows == {"v2": ("45.7 ms", "8.4x"), "v3": ("9.4 ms", "1.67-1.72x")}
