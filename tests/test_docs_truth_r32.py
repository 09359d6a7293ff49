"""The docs and notebooks still say what the code does after rounds 28-32 (MKL as the BLAS, a layer's products
whole on MKL's threads, dB = dY^T U, MKL's OpenMP workers spinning briefly, oneDNN's convolution gradients).

What went stale, and what each test checks:

* EXERCISES.md said exercise 4.3's solution writes dB as ``s * (U.T @ dY).T`` ("OpenBLAS runs that layout 10-20%
  faster"); since round 31 it is ``s * matmul(dY.T, U)``, torch's orientation. A quoted solution line is the
  region's own line.
* README.md, EXERCISES.md and ARCHITECTURE.md said a LoRA or Linear layer's products run on blocks of rows in C
  threads; with MKL on more than one thread they run whole on MKL's threads (``blas.threads_products``).
* ARCHITECTURE.md said the private libgomp's idle workers sleep; since round 32 they spin
  ``blas.SPINS_BEFORE_SLEEP`` rounds first.
* README.md limited torch's bits for a LoRA layer to ``lora_alpha / r`` a power of two; a scale that rounds takes
  PEFT's order since round 29. Its blas row, benchmarks/gemm.py and notebook 5 called the BLAS NumPy's.
* ops/conv_onednn.py's docstring listed three of the five oneDNN backward kernels it models.
* Three reveals in notebooks 1 and 3 came with no prediction asked first (two had the answer in the text above).
"""
import inspect
import re
import sys
from pathlib import Path

import pytest

from minilora import blas, parallel
from minilora.ops import conv_onednn
from minilora.ops import lora as lora_ops
from test_docs_truth_r26 import _flat, _notebook, _printed, _shown
from test_notebooks import EXPECTED, builder

ROOT = Path(__file__).resolve().parents[1]


def _read(relative):
    return (ROOT / relative).read_text(encoding="utf-8")


def _paragraphs(text):
    return [_flat(part) for part in re.split(r"\n\s*\n", text)]


def _solution_region(function):
    source = inspect.getsource(function)
    return source[source.index("# BEGIN SOLUTION"):source.index("# END SOLUTION")]


def _squeezed(code):
    return re.sub(r"\s+", "", code)


def test_exercises_md_quotes_each_solution_line_as_the_region_writes_it():
    """'The solution writes `math` as `code`': the code is the shipped region's (4.3's dB changed orientation)."""
    quoted = re.findall(r"The solution writes `[^`]+` as `([^`]+)`", _read("notebooks/EXERCISES.md"))
    assert quoted, "EXERCISES.md no longer quotes a solution line: drop this test"
    region = _squeezed(_solution_region(lora_ops._lora_backward_rows))
    for code in quoted:
        assert _squeezed(code) in region, f"EXERCISES.md quotes {code!r}; exercise 4.3's region does not write it"
    assert "matmul(dY.T, U)" in _solution_region(lora_ops._lora_backward_rows)  # torch's orientation


def test_every_paragraph_on_layers_products_in_c_threads_names_mkls_case():
    """A paragraph saying a layer's products run in C threads says what MKL's threads do instead: with MKL on two
    threads the products run whole (checked on this process where MKL is minilora's BLAS)."""
    stale = []
    for name in ("README.md", "notebooks/EXERCISES.md", "ARCHITECTURE.md"):
        for paragraph in _paragraphs(_read(name)):
            if re.search(r"products[^.]*\bin C threads", paragraph) and "MKL" not in paragraph:
                stale.append(f"{name}: {paragraph[:120]}")
    assert not stale, stale
    if blas.library() != "mkl":
        return
    torch = sys.modules.get("torch")  # (its count caps minilora's products': conftest sets it to one)
    before = parallel.num_threads(), torch.get_num_threads() if torch else None
    parallel.set_num_threads(2)
    if torch:
        torch.set_num_threads(2)
    try:
        assert blas.threads_products() and lora_ops._products_whole()
    finally:
        parallel.set_num_threads(before[0])
        if torch:
            torch.set_num_threads(before[1])


def test_architecture_names_the_lora_twin_that_gives_pefts_bits():
    """ARCHITECTURE.md's rule "a torch-bits path is the region's own solution, never a twin beside it" names its
    exception: on MKL the LoRA layer takes PEFT's order beside exercises 4.2 and 4.3 where one fused product would
    round otherwise, and only while they are the shipped solution."""
    source = inspect.getsource(lora_ops._forward_another_way)
    assert source.index("_forward_is_the_solution()") < source.index("_pefts_order_needed(")
    rule = _flat(_read("ARCHITECTURE.md"))
    rule = rule[rule.index("a torch-bits path is the region's own solution"):][:400]
    assert "`_pefts_order_needed`" in rule and "4.2 and 4.3" in rule, rule


def test_docs_say_mkls_openmp_workers_spin_before_they_sleep():
    """ARCHITECTURE.md and README.md name the spin count blas loads its private libgomp with."""
    assert blas.SPINS_BEFORE_SLEEP > 0
    for name in ("ARCHITECTURE.md", "README.md"):
        text = _flat(_read(name))
        assert "whose idle workers sleep," not in text, name
        assert "`blas.SPINS_BEFORE_SLEEP`" in text, name
    assert "SPINS_BEFORE_SLEEP" in inspect.getdoc(parallel)


def test_readme_claims_pefts_bits_for_any_lora_scale():
    """A scale that rounds (alpha 12 at r 8) takes PEFT's order: README.md no longer limits the claim."""
    assert lora_ops._scale_rounds(12 / 8) and not lora_ops._scale_rounds(16 / 8)
    which_blas = next(p for p in _paragraphs(_read("README.md")) if p.startswith("Which BLAS"))
    assert "power of two" not in which_blas


def test_the_blas_is_named_mkl_or_openblas_not_numpys():
    """README.md's blas row, blas.py's and benchmarks/gemm.py's first lines and the notebooks' prose name MKL where
    it is the BLAS, not "NumPy's BLAS"."""
    blas_row = next(line for line in _read("README.md").splitlines() if line.startswith("| blas |"))
    assert "MKL" in blas_row, blas_row
    assert "MKL" in inspect.getdoc(blas).splitlines()[0]
    gemm_doc = _read("benchmarks/gemm.py")
    assert "NumPy's BLAS (as minilora runs it)" not in gemm_doc and 'blas.library() == "mkl"' in gemm_doc
    for src in builder.sources():
        prose = " ".join(body for kind, body in builder.parse(src.read_text(encoding="utf-8")) if kind == "markdown")
        assert "NumPy's BLAS" not in prose, src.name


def test_conv_onednn_docstring_names_every_backward_kernel_it_models():
    """jit:avx512_core, jit_1x1, jit_dw and gemm:jit each have their bullet in the module's docstring."""
    bullets = [line for line in inspect.getdoc(conv_onednn).splitlines() if line.startswith("* ")]
    for kernel in ("``jit:avx512_core``", "``jit_1x1``", "``jit_dw``", "``gemm:jit``"):
        assert any(kernel in line for line in bullets), kernel
    assert "one_by_one_weight_gradient" in inspect.getdoc(conv_onednn)


# Cells that print without a prediction asked first, and why that is right (first code line of the cell).
NO_PREDICTION_NEEDED = {
    "05": {"import time": "setup: says whether the emu device is enabled",
           "source = (kernels.kernel_dir()": "prints a kernel's source to read",
           "start = source.index(": "prints the exercise's part of the source",
           "# The H200 table's times at r = 16": "reads numbers the table above shows"},
    "06": {"def trainable(model):": "the reveal of the prompt before the loss plot just above it"},
    "07": {"import json": "setup", "colours = {": "the picture of the schedule printed just above it"},
}


def _reveals_without_a_prediction(cells):
    """First lines of code cells that print or plot with no "Predict" in the text since the last such cell."""
    missing, asked = [], False
    for kind, body in cells:
        if kind == "markdown":
            asked = asked or bool(re.search(r"[Pp]redict", body))
        elif "print(" in body or "plt.show" in body:
            if not asked:
                missing.append(next(line for line in body.splitlines() if line.strip()))
            asked = False
    return missing


def _ratios_unprinted(cells):
    """"about 11x less kept": a ratio glued to its x and followed by a word (which round 26's reader leaves out, to
    skip "4 x 4") that no cell of the notebook prints."""
    printed = _printed(cells)
    found = []
    for cell in cells:
        if cell.cell_type == "markdown":
            text = re.sub(r"`[^`]*`", " ", re.sub(r'"[^"]*"', " ", " ".join(cell.source.split())))
            found += [m[0] for m in re.finditer(r"(?<![\w.^/~-])(\d[\d,]*(?:\.\d+)?)x(?= [a-z])", text)
                      if not _shown(m[1], "x", printed)]
    return found


def test_notebooks_ask_before_they_reveal_and_quote_the_ratios_they_print():
    """A code cell that shows a result has a "Predict" prompt before it (since the last reveal), but for the setup
    and reading cells listed above; and a ratio the prose gives ("about 10x less kept") is one its cells print
    (notebook 3 said 11x; rebuilt on round 32's code it prints 9.8x)."""
    unasked = []
    for src in builder.sources():
        allowed = NO_PREDICTION_NEEDED.get(src.name[:2], {})
        for first in _reveals_without_a_prediction(builder.parse(src.read_text(encoding="utf-8"))):
            if not any(first.startswith(prefix) for prefix in allowed):
                unasked.append(f"{src.name}: {first}")
    assert not unasked, unasked
    planted = [("markdown", "**Predict:** how many?"), ("code", "print(1)"), ("code", "print(2)")]
    assert _reveals_without_a_prediction(planted) == ["print(2)"]
    nbformat = pytest.importorskip("nbformat")
    run = nbformat.v4.new_code_cell("print('kept: 9.8x less')")
    run.outputs = [nbformat.v4.new_output("stream", text="kept: 9.8x less\n")]
    prose = nbformat.v4.new_markdown_cell("about 10x less kept, 11x less stored, a 4 x 4 block")
    assert _ratios_unprinted([run, prose]) == ["11x"]
    unprinted = {name: found for name in EXPECTED if (found := _ratios_unprinted(_notebook(name).cells))}
    assert not unprinted, unprinted
