"""The teaching notebooks run, and the committed ones are what their sources produce.

* every committed notebook (``notebooks/NN_*.ipynb``) was built from ``notebooks/src/NN_*.py`` and
  executed: every code cell has run, there is no error output, and there are plots;
* every notebook runs again from scratch with nbclient (kernel ``python3``), in a temporary working
  folder so that what it writes (adapter folders, checkpoints) never lands in the repository; any
  error fails, and a notebook gets 120 seconds in all (``notebooks/build_notebooks.py``'s ``TIMEOUT``).
* the student copy (``minilora exercises build``) shows no line of any solution in its notebooks --
  cells or committed outputs -- and, run there, notebook 1 stops at its first stub with the
  exercise's own message.

The run tests need nbclient and ipykernel (the ``test`` extras) and are skipped without them.
"""
import importlib.util
import os
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path):
    reason = _skip_reason(name)
    if reason:
        pytest.skip(reason)
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from minilora.models import BASE_DIR
    if name not in ("01_autograd", "05_cuda_kernels"):
        assert os.path.isfile(os.path.join(BASE_DIR, "config.json")), \
            f"{name} needs the shipped base model, but {BASE_DIR} has no config.json"
    nb = _read(name)
    try:
        seconds = builder.execute(nb, tmp_path, timeout=builder.TIMEOUT)
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


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory):
    from minilora.exercises import build
    dest = tmp_path_factory.mktemp("student") / "copy"
    build(dest, items=("minilora", "kernels", "notebooks"))
    return dest


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


def test_student_copy_notebook_stops_at_the_first_unsolved_exercise(student_copy, monkeypatch):
    """Run in the student copy (its stubbed minilora first on the path), notebook 1 stops with the
    stub's NotImplementedError, which names the exercise to do."""
    reason = _skip_reason("01_autograd")
    if reason:
        pytest.skip(reason)
    nbformat = pytest.importorskip("nbformat")
    from nbclient.exceptions import CellExecutionError
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(student_copy),
                                                                    os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(str(student_copy / "notebooks" / "01_autograd.ipynb"), as_version=4)
    with pytest.raises(CellExecutionError) as info:
        builder.execute(nb, student_copy, timeout=builder.TIMEOUT)
    message = str(info.value)
    assert "NotImplementedError" in message and "Exercise 1." in message, message[-2000:]
    assert str(student_copy) in message, "the notebook did not import the student copy's minilora"
