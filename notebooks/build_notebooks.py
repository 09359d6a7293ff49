"""Build the teaching notebooks from their sources, run them, and save them with their outputs.

Each notebook is written as a plain Python file in ``notebooks/src/`` ("percent" format, as jupytext
reads it): a line ``# %%`` starts a code cell, ``# %% [markdown]`` a text cell whose lines are
comments. Diffs stay readable, and a source also runs as a script (``python notebooks/src/01_autograd.py``).
This script turns every source into ``notebooks/<name>.ipynb``, executes it with nbclient (kernel
``python3``) in a fresh temporary folder, so adapter folders and images it writes do not land in the
repository, and saves the notebook with its outputs::

    python notebooks/build_notebooks.py            # build and run them all
    python notebooks/build_notebooks.py 03 05      # only the notebooks whose names start so
    python notebooks/build_notebooks.py --check    # are the committed notebooks built from src/?

Edit the source, never the ``.ipynb``: the next build overwrites it. ``tests/test_notebooks.py`` runs
the committed notebooks again and checks that they match their sources.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
TIMEOUT = 120  # seconds for a whole notebook (CI runs them all on 2 cores)
KERNEL = "python3"

__all__ = ["sources", "parse", "to_notebook", "kernel_env", "execute", "build", "code_cells_match"]


def sources():
    """The notebook sources, in order: ``[Path('.../src/01_autograd.py'), ...]``."""
    return sorted(SRC.glob("[0-9][0-9]_*.py"))


def parse(text):
    """``[(kind, text)]`` with kind ``"markdown"`` or ``"code"``, from a percent-format source."""
    cells, kind, lines = [], None, []

    def close():
        body = "\n".join(lines).strip("\n")
        if kind is not None and body.strip():
            cells.append((kind, body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            close()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind == "markdown":
            if line and not line.startswith("#"):
                raise ValueError(f"markdown cell line does not start with '#': {line!r}")
            lines.append(line[2:] if line.startswith("# ") else line[1:])
        elif kind == "code":
            lines.append(line)
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"code before the first '# %%' cell marker: {line!r}")
    close()
    return cells


def to_notebook(path):
    """An nbformat notebook (no outputs yet) from one source file. Cell ids are stable (``c00``, ...)
    so that rebuilding an unchanged source gives an unchanged file."""
    import nbformat
    nb = nbformat.v4.new_notebook()
    for i, (kind, body) in enumerate(parse(Path(path).read_text(encoding="utf-8"))):
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(make(body, id=f"c{i:02d}"))
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    return nb


def kernel_env():
    """The environment of the notebook kernel: ours, with one BLAS thread unless set otherwise, and glibc's
    malloc keeping freed memory (``minilora.parallel.keep_freed_memory_environ``).

    The notebooks multiply small matrices, where a BLAS thread pool costs more than it saves, and
    on a busy machine (CI, other jobs) threads fighting for two cores make a run several times slower.
    The kernel is all minilora's, as ``minilora train``'s process is: by default glibc hands each op's arrays
    of a megabyte or so back to the OS and the next op faults their pages in again -- 17% of notebook 8's
    CPU time (32.9 -> 27.4 s; its VeRA run, which holds more such arrays than LoRA's fused op, page-faulted
    twice as often), with the same numbers either way."""
    from minilora.parallel import keep_freed_memory_environ
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    for name, value in keep_freed_memory_environ().items():
        env.setdefault(name, value)
    return env


def execute(nb, workdir, timeout=TIMEOUT, env=None):
    """Run every cell of ``nb`` in place with ``workdir`` as the current folder; return the seconds.

    ``timeout`` bounds the whole notebook: each cell gets what is left of it. A cell that raises
    makes nbclient raise ``CellExecutionError`` (with the traceback). ``env``: the kernel's
    environment (default ``kernel_env()``)."""
    from nbclient import NotebookClient
    deadline = time.monotonic() + timeout
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=timeout, record_timing=False,
                            timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
                            resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute(env=kernel_env() if env is None else env)
    return time.perf_counter() - start


def _write(nb, path):
    """Atomic write (minilora's: a temporary file of this process's own, flushed to disk, then renamed): a
    half-written notebook never replaces a good one, and two builds at once never write one temporary file."""
    import nbformat
    from minilora.checkpoint import atomic_write
    with atomic_write(path, "w") as f:
        nbformat.write(nb, f)


def build(path, run=True):
    """Build ``notebooks/<name>.ipynb`` from the source ``path``; run it if ``run``. Returns seconds."""
    nb = to_notebook(path)
    seconds = 0.0
    if run:
        with tempfile.TemporaryDirectory(prefix="minilora-nb-") as workdir:
            seconds = execute(nb, workdir)
    _write(nb, HERE / (Path(path).stem + ".ipynb"))
    return seconds


def code_cells_match(ipynb_path, src_path):
    """True when the notebook's cells (kind and text) are exactly those of its source."""
    import nbformat
    nb = nbformat.read(str(ipynb_path), as_version=4)
    built = [(c.cell_type, c.source) for c in nb.cells]
    return built == parse(Path(src_path).read_text(encoding="utf-8"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="prefixes of the notebooks to build (default: all)")
    p.add_argument("--no-run", action="store_true", help="write the notebooks without executing them")
    p.add_argument("--check", action="store_true", help="only check that each .ipynb matches its source")
    args = p.parse_args(argv)
    chosen = [s for s in sources() if not args.names or any(s.stem.startswith(n) for n in args.names)]
    if not chosen:
        p.error(f"no source in {SRC} matches {args.names}")
    stale = []
    for src in chosen:
        if args.check:
            ipynb = HERE / (src.stem + ".ipynb")
            if not ipynb.exists() or not code_cells_match(ipynb, src):
                stale.append(src.stem)
            continue
        seconds = build(src, run=not args.no_run)
        print(f"{src.stem:<32} {seconds:6.1f} s", flush=True)
    if stale:
        print("out of date (run python notebooks/build_notebooks.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
