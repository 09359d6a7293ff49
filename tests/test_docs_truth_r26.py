"""The notebooks, the exercises, README.md and ARCHITECTURE.md tell the truth about today's code (round 26).

Round 25 moved the code (C threads for a layer's BLAS products: ``minilora/gemm_pool.py`` and
``native/gemm_pool.c``; AdamW's float32 step in one compiled pass: ``ml_adamw`` in ``native/float32_kernels.c``)
and the text did not always follow. These tests read the committed notebooks and the markdown files and
fail when a claim goes stale again:

* a number with a unit in a notebook's prose (``11x``, ``8%``, ``349 GB``, ``5.6 ms``) is one its cells
  print, to the precision the prose writes it (quotes of the lesson, in double quotes, and tables
  checked elsewhere aside): nb03 said "350 GB" and "1.05M" that no cell computed, nb05 typed its H200
  ratios, nb07 a file size;
* a "Predict" prompt ends its cell and its answer comes from code: no text stands between the prompt and
  the cell that reveals it (nb05 explained the race, and fusion's savings, before running them);
* a notebook that prints a timing prints the machine it ran on, in the same run
  (``parallel.machine_description``);
* ARCHITECTURE.md names where the C thread pool and the one-pass AdamW live and why, EXERCISES.md which
  exercise regions such a fast path shadows, and every file and ``module.attribute`` the notebooks,
  README.md and EXERCISES.md name exists.
"""
import importlib
import inspect
import re
from decimal import Decimal
from pathlib import Path

import pytest

from test_notebooks import EXPECTED, builder

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"(\d[\d,]*(?:\.\d+)?)"
SCALES = {"M": Decimal(10) ** 6, "B": Decimal(10) ** 9}   # millions, billions: printed as plain counts


def _notebook(name):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(str(ROOT / "notebooks" / f"{name}.ipynb"), as_version=4)


def _printed(cells):
    """Every code cell's printed text and displayed result, as one string."""
    parts = []
    for cell in cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else ():
            parts.append(out.get("text", "") if out.output_type == "stream" else
                         str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------
# Numbers in the prose come from the outputs
# ------------------------------------------------------------------------------------------------
def _precision(written):
    """Half a step of the last digit written: "8.1" -> 0.05; "700" -> 50 (trailing zeros are rounding)."""
    digits = written.replace(",", "")
    if "." in digits:
        return Decimal(1).scaleb(-len(digits.split(".")[1])) / 2
    zeros = len(digits) - len(digits.rstrip("0"))
    return Decimal(10) ** min(zeros, len(digits) - 1) / 2


def _prose_claims(markdown):
    """``(number, unit, context)`` for each number with a unit in the prose: not in a table row (notebook 5's
    H200 table is checked against benchmarks/RESULTS.md by tests/test_notebooks.py), not in code spans, not in
    double quotes (the lesson's own numbers, quoted to be corrected), not a model's size ("7B model")."""
    text = " ".join(line for line in markdown.splitlines() if not line.lstrip().startswith("|"))
    text = re.sub(r"`[^`]*`", " ", re.sub(r'"[^"]*"', " ", " ".join(text.split())))
    unit = (r"(x(?!\s?[\w(])"                                   # 11x, not 4,718,592 x r or 4 x 4
            r"|%|ms|s|kB|MB|GB|TB|M"
            r"|B(?![\w-])(?!\s(?:model|scale|parameter)))")     # 175B, not a 7B model
    for found in re.finditer(r"(?<![\w.^/~-])" + NUMBER + r"\s?" + unit + r"(?![\w-])", text):
        yield found[1], found[2], text[max(0, found.start() - 60):found.end() + 20]


def _shown(number, unit, printed):
    """Whether ``printed`` holds ``number`` (with its unit, or as a plain count of millions/billions) to the
    precision it is written with."""
    value, half_step = Decimal(number.replace(",", "")), _precision(number)
    candidates = [Decimal(n.replace(",", "")) for n in re.findall(NUMBER + r"\s?" + re.escape(unit) + r"(?![\w])",
                                                                 printed)]
    if unit in SCALES:
        candidates += [Decimal(n.replace(",", "")) / SCALES[unit] for n in re.findall(NUMBER, printed)]
    return any(abs(c - value) <= half_step for c in candidates)


def _unprinted_numbers(cells):
    first_code = next(i for i, cell in enumerate(cells) if cell.cell_type == "code")
    printed = _printed(cells)
    return [f"cell {i}: {number}{unit} in '...{context}...'" for i, cell in enumerate(cells)
            if cell.cell_type == "markdown" and i > first_code
            for number, unit, context in _prose_claims(cell.source) if not _shown(number, unit, printed)]


def _number_reader_sees_a_typed_number():
    """The reader can fail: a number no cell printed is found, a rounded one that a cell printed is not."""
    nbformat = pytest.importorskip("nbformat")
    code = nbformat.v4.new_code_cell("print('kept: 11.1x less, 699.0 GB, 37,748,736 trainable')")
    code.outputs = [nbformat.v4.new_output("stream", text="kept: 11.1x less, 699.0 GB, 37,748,736 trainable\n")]
    prose = nbformat.v4.new_markdown_cell('About 11x less, 700 GB, 37.7M; the lesson\'s "526M" is quoted. '
                                          "Typed: 350 GB and 1.05M per rank; a 7B model; 4,718,592 x r; 4 x 4.")
    found = _unprinted_numbers([code, prose])
    assert [entry.split(" in ")[0] for entry in found] == ["cell 1: 350GB", "cell 1: 1.05M"], found


def test_numbers_in_the_notebooks_prose_are_printed_by_their_cells():
    """A number the text gives after the first code cell is one the notebook computed and printed (nb03's
    "350 GB" and "1.05M per rank", nb05's H200 rate and savings, nb07's "320 kB" and "0.4%" were typed)."""
    _number_reader_sees_a_typed_number()
    unprinted = {name: found for name in EXPECTED if (found := _unprinted_numbers(_notebook(name).cells))}
    assert not unprinted, f"numbers in the prose that no cell prints (print them, or quote the source): {unprinted}"


# ------------------------------------------------------------------------------------------------
# Predict, then reveal
# ------------------------------------------------------------------------------------------------
def _prompts_answered_early(cells):
    """``(cell, why)`` for each "Predict" prompt that does not end its markdown cell, or whose reveal -- the
    first code cell after it with an output -- has a markdown cell before it (text that may give the answer)."""
    early = []
    for i, cell in enumerate(cells):
        if cell.cell_type != "markdown" or "**Predict" not in cell.source:
            continue
        after = [p for p in re.split(r"\n\s*\n", cell.source[cell.source.index("**Predict"):]) if p.strip()]
        if len(after) > 1:
            early.append((i, f"text after the prompt in its cell: {after[1][:60]!r}"))
        j = i + 1
        while j < len(cells) and cells[j].cell_type == "code" and not cells[j].outputs:   # `prediction = None`
            j += 1
        if j < len(cells) and cells[j].cell_type == "markdown":
            early.append((i, f"cell {j} is text between the prompt and its reveal: {cells[j].source[:60]!r}"))
    return early


def _prompt_reader_sees_text_before_the_reveal():
    nbformat = pytest.importorskip("nbformat")
    run = nbformat.v4.new_code_cell("print(1)")
    run.outputs = [nbformat.v4.new_output("stream", text="1\n")]
    cells = [nbformat.v4.new_markdown_cell("**Predict:** how much?"), nbformat.v4.new_code_cell("guess = None"),
             nbformat.v4.new_markdown_cell("It is always wrong."), run,
             nbformat.v4.new_markdown_cell("**Predict:** and now?\n\nThe answer is 1."), run]
    assert [i for i, _ in _prompts_answered_early(cells)] == [0, 4]


def test_every_predict_prompt_ends_its_cell_and_code_reveals_it():
    """nb05 explained "the wrong order happens every time" between the race prompt and the cell that runs the
    race, and "fusion saves no arithmetic" between the fusion prompt and the cell that counts it."""
    _prompt_reader_sees_text_before_the_reveal()
    early = {name: found for name in EXPECTED if (found := _prompts_answered_early(_notebook(name).cells))}
    assert not early, f"prompts answered before their reveal: {early}"


# ------------------------------------------------------------------------------------------------
# Timings say which machine, measured in the same run
# ------------------------------------------------------------------------------------------------
TIMING = re.compile(r"\b\d+(?:\.\d+)? ?(?:ms|s)\b(?! *=)")
MACHINE = re.compile(r"\d+ cores? usable, \d+ minilora threads?")


def test_machine_description_names_the_cpu_cores_and_threads():
    from minilora import parallel
    described = parallel.machine_description()
    assert MACHINE.search(described) and described.endswith(f"{parallel.num_threads()} minilora thread"
                                                            + ("s" if parallel.num_threads() != 1 else ""))


def test_every_notebook_that_prints_a_timing_names_its_machine():
    """A time means little without the machine: each notebook that prints one prints
    ``parallel.machine_description()`` in the same run (nb03, nb05, nb06, nb07, nb08 and nb09 printed times alone)."""
    timed = [name for name in EXPECTED if TIMING.search(_printed(_notebook(name).cells))]
    assert {"03_memory_wall", "06_finetune", "07_merge_and_serve", "09_distributed"} <= set(timed)
    unnamed = [name for name in timed if not MACHINE.search(_printed(_notebook(name).cells))]
    assert not unnamed, f"notebooks that print a timing without the machine: {unnamed}"


def test_nb05_reads_its_h200_numbers_from_results_md():
    """Notebook 5's prose on the H200 run (cuBLAS's rate and share of the fp32 peak, what v3, v4 and v5 each saved)
    is printed by a cell from the table's times, which are benchmarks/RESULTS.md's at r = 16."""
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    table = results.split("## LoRA forward:", 1)[1].split("\n## ", 1)[0]
    times = {cells[1]: cells[2] for cells in (
        [c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()) if cells[0] == "16"}
    source = (builder.SRC / "05_cuda_kernels.py").read_text(encoding="utf-8")
    shown = re.search(r"^v2_ms, v3_ms, v4_ms = ([\d.]+), ([\d.]+), ([\d.]+)", source, re.M)
    assert shown and list(shown.groups()) == [times[f"fused v{v}"] for v in (2, 3, 4)]
    peak = re.search(r"Peaks assumed: ([\d.]+) TFLOP/s fp32", results)[1]
    assert re.search(rf"^fp32_peak = {float(peak):g}e12 ", source, re.M)


# ------------------------------------------------------------------------------------------------
# Where the code lives
# ------------------------------------------------------------------------------------------------
def _flat(text):
    return " ".join(text.split())


def test_architecture_names_where_the_c_threads_and_the_one_pass_adamw_live_and_why():
    """ARCHITECTURE.md said AdamW runs "PyTorch's update formula in NumPy everywhere else" and named neither
    ``ml_adamw`` nor why it exists; the C thread pool's row did not say why C."""
    text = _flat((ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    for name in ("`minilora/gemm_pool.py`", "`native/gemm_pool.c`", "`ml_pool_run`", "`ml_adamw`",
                 "`float32_math.adamw_step`", "`_in_one_pass`", "`minilora/solutions.py`", "`solutions.solution_check`"):
        assert name in text, name
    assert "Why C: a Python thread takes the GIL back after every NumPy call" in text
    assert "the one pass reads each of them once" in text
    assert "in NumPy everywhere else" not in text and "two at a time" not in text
    from minilora import float32_math, gemm_pool, solutions
    from minilora.optim import adam
    assert callable(float32_math.adamw_step) and callable(adam._in_one_pass) and callable(gemm_pool.run)
    assert callable(solutions.solution_check)
    assert "ml_adamw" in (ROOT / "minilora" / "native" / "float32_kernels.c").read_text(encoding="utf-8")
    assert "ml_pool_run" in (ROOT / "minilora" / "native" / "gemm_pool.c").read_text(encoding="utf-8")


def _shadowed_exercises():
    """The exercise numbers whose region a fast path checks with ``solutions.solution_check(fn)`` before
    computing the same numbers its own way: the exercise marked inside ``fn``'s source."""
    from minilora.exercises import find_exercises
    numbers = set()
    for path in sorted((ROOT / "minilora").rglob("*.py")):
        for fn_name in re.findall(r"solutions\.solution_check\((\w+)\)", path.read_text(encoding="utf-8")):
            module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
            lines, first = inspect.getsourcelines(getattr(module, fn_name))
            numbers |= {ex.number for ex in find_exercises(ROOT) if ex.path == path.relative_to(ROOT).as_posix()
                        and first <= ex.line <= first + len(lines)}
    return numbers


def test_exercises_md_names_the_fast_paths_that_step_aside_for_a_learner():
    """Round 25's C threads and one-pass AdamW compute exercises 1.5, 4.2, 4.3 and 6.1's numbers their own way
    while the region is the shipped solution (round 26's row kernels and attention 2.1, 2.2 and 2.4's); EXERCISES.md
    says which, and that a learner's region is what runs, and so does ARCHITECTURE.md's rule on exercises."""
    shadowed = _shadowed_exercises()
    assert {"1.5", "4.2", "4.3", "6.1"} <= shadowed, shadowed
    text = _flat((ROOT / "notebooks" / "EXERCISES.md").read_text(encoding="utf-8"))
    assert "faster twin" in text, "EXERCISES.md does not say which regions a faster path shadows"
    section = text[text.index("faster twin"):text.index("test_exercise_paths_r21.py")]
    listed = set(re.findall(r"\b\d\.\d\b", section))
    assert listed == shadowed, f"EXERCISES.md names {sorted(listed)}; fast paths shadow {sorted(shadowed)}"
    for name in ("`minilora/gemm_pool.py`", "`float32_math.adamw_step`", "`minilora.solutions.solution_check`"):
        assert name in section, name
    architecture = _flat((ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    rule = architecture[architecture.index("A fast path that computes a region's numbers another way"):]
    rule = rule[:rule.index("`solutions.solution_check`")]
    assert set(re.findall(r"\b\d\.\d\b", rule)) == shadowed, rule


def _named_paths_and_attributes(text):
    """Paths (with a folder) and ``minilora.a.b`` / ``ml.a`` names in the code spans of ``text``."""
    paths, dotted = set(), set()
    for span in re.findall(r"`([^`\n]+)`", text):
        span = span.split("::")[0].split("(")[0].strip()
        if re.fullmatch(r"(?:minilora|tests|kernels|benchmarks|notebooks)/[\w./-]*", span) and "*" not in span:
            paths.add(span)
        elif re.fullmatch(r"(?:minilora|ml)(?:\.\w+)+", span):
            dotted.add(re.sub(r"^ml\.", "minilora.", span))
    return paths, dotted


def _exists(path):
    """The path exists; a placeholder (README's `notebooks/src/NN_name.py`) matches at least one file."""
    return any(ROOT.glob(path.rstrip("/").replace("NN_name", "[0-9][0-9]_*")))


def _resolves(dotted):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_readme_exercises_and_notebooks_name_code_that_exists():
    """Every repository path and ``minilora.x.y`` the notebooks' prose, README.md and EXERCISES.md name exists
    (a rename that leaves the text behind fails here), and README.md names round 25's C paths -- the thread
    pool's module and the one-pass AdamW -- where it says what runs on a CPU, and the notebooks' time limit it
    quotes is the one CI runs them with."""
    texts = {"README.md": (ROOT / "README.md").read_text(encoding="utf-8"),
             "notebooks/EXERCISES.md": (ROOT / "notebooks" / "EXERCISES.md").read_text(encoding="utf-8")}
    for src in builder.sources():
        texts[f"notebooks/src/{src.name}"] = "\n".join(body for kind, body in builder.parse(src.read_text(encoding="utf-8"))
                                                       if kind == "markdown")
    _name_reader_sees_a_missing_path_and_attribute()
    missing = []
    for where, text in texts.items():
        paths, dotted = _named_paths_and_attributes(text)
        missing += [f"{where}: {p}" for p in sorted(paths) if not _exists(p)]
        missing += [f"{where}: {d}" for d in sorted(dotted) if not _resolves(d)]
    assert not missing, missing
    readme = _flat(texts["README.md"])
    assert "| cores | `minilora/parallel.py`, `minilora/gemm_pool.py` |" in readme
    assert "`float32_math.adamw_step`" in readme and "`ml_adamw`" in readme
    assert "in under two minutes on a CPU" in readme and builder.TIMEOUT == 120


def _name_reader_sees_a_missing_path_and_attribute():
    paths, dotted = _named_paths_and_attributes("see `minilora/gone.py`, `ml.parallel.machine_description` and "
                                                "`minilora.parallel.no_such_thing`; `tests/test_x.py::test_y`")
    assert paths == {"minilora/gone.py", "tests/test_x.py"}
    assert {d: _resolves(d) for d in dotted} == {"minilora.parallel.machine_description": True,
                                                 "minilora.parallel.no_such_thing": False}
