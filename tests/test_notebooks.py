"""The teaching notebooks run, and the committed ones are what their sources produce.

* every committed notebook (``notebooks/NN_*.ipynb``) was built from ``notebooks/src/NN_*.py`` and
  executed: every code cell has run, there is no error output, and there are plots;
* every notebook runs again from scratch with nbclient (kernel ``python3``), in a temporary working
  folder so that what it writes (adapter folders, checkpoints) never lands in the repository; any
  error fails, and a notebook gets 120 seconds in all (``notebooks/build_notebooks.py``'s ``TIMEOUT``).

The run tests need nbclient and ipykernel (the ``test`` extras) and are skipped without them.
"""
import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
EXPECTED = ["01_autograd", "02_transformer", "03_memory_wall", "04_lora_layer", "05_cuda_kernels",
            "06_finetune", "07_merge_and_serve", "08_variants_and_diagnostics"]


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
