"""The LoRA layer on MKL's threads as PEFT's (round 31), and MKL without a compiler leaving torch alone.

Round 30 ran every whole product on MKL's threads, as torch's; the fused LoRA layer still cut its rows into blocks,
one MKL thread each, and on 2 threads MKL splits a product its own way (for many shapes the sum over K): at hidden
4096 y, dx, dA and dB were an ulp or so off PEFT's. Now its products run whole there (ops/lora.py's
``_products_whole``). Sweeping further (tests/mkl_lora_sweep.py) found three more of PEFT's roundings at any thread
count: BLAS's beta = 1 adds an unrounded product for one or two rows and for r = 1 (``_beta_adds_rounded``), and
MKL's threaded product of one float32 row depends on where its output lies (torch's tensors start at 64 bytes:
blas's ``_TORCH_ALIGNMENT``). Batched products (attention's, 3-D @ 2-D) and their gradients were torch's already.

Without a C compiler minilora loaded MKL through libmkl_rt, which puts MKL's functions in the process's global scope:
torch imported afterwards multiplied on their one thread. Now it takes NumPy's OpenBLAS there, with a warning.
"""
import json
import os
import sys
import textwrap

import numpy as np
import pytest

from minilora import blas

import background_runs  # (tests/ is on the path: conftest.py)

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
import mkl_lora_sweep  # noqa: E402  (it imports torch and peft)
from test_lora_step_bits_r29 import mkl  # noqa: E402,F401  (a fixture: MKL chosen for the test)
from test_mkl_threads_r30 import MINILORA_PRODUCT, THREADS_SHOW_IN_BITS, TORCH_PRODUCTS  # noqa: E402
pytestmark = pytest.mark.skipif(blas._mkl_library() is None, reason="the `mkl` wheel (minilora[mkl]) is not installed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def threaded(mkl, two_threads):
    if not blas.threads_products():
        pytest.skip("MKL's threaded layer is not loaded here (no libgomp, or no C compiler)")


def _differing(shapes, threads, dtype):
    """Where PEFT's and minilora's LoRA layers of ``shapes`` differ: "rows x in->out/r: the tensors' numbers"."""
    return mkl_lora_sweep.lora_sweep(shapes, threads, dtype)[2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_7b_layer_on_two_threads_is_pefts(threaded, dtype):
    """Hidden 4096, 16 and 64 rows, r 8 and 64: y, dx, dA, dB, dbias (every one of them differed on START but dbias)."""
    shapes = [(16, 4096, 4096, 8), (64, 4096, 1024, 64)]
    assert _differing(shapes, 2, dtype) == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_tutorial_llama_layer_on_two_threads_is_pefts(threaded, dtype):
    """benchmarks/lora_step.py's shapes (1024 rows, 256 -> 688, r 8): dA and dB were off PEFT's by blocks of rows;
    and dB as (U^T dY)^T, whole, still was -- torch's is dY^T U (its weight's layout), which MKL's threads split
    otherwise."""
    assert _differing([(1024, 256, 688, 8), (256, 688, 256, 64)], 2, dtype) == []


@pytest.mark.parametrize("threads", [1, 2])
def test_one_or_two_rows_and_rank_one_are_pefts(mkl, two_threads, threads):
    """BLAS's beta = 1 adds an unrounded product for one row (both dtypes), two rows (float64) and r = 1 (any rows),
    where PEFT adds two rounded results; and a float32 row's product on 2 threads depends on its output's address."""
    if threads == 2 and not blas.threads_products():
        pytest.skip("MKL's threaded layer is not loaded here")
    shapes = [(rows, 256, 688, r) for rows in (1, 2, 5) for r in (1, 8)]
    for dtype in (np.float32, np.float64):
        assert _differing(shapes + ([(1, 4096, 4096, 8)] if threads == 2 and dtype == np.float32 else []), threads,
                          dtype) == [], dtype


def test_one_row_product_is_torchs_wherever_its_output_lies(threaded):
    rng = np.random.default_rng(0)
    row, w = rng.standard_normal((1, 4096)).astype(np.float32), rng.standard_normal((4096, 4096)).astype(np.float32)
    expected = (torch.from_numpy(row) @ torch.from_numpy(w)).numpy()
    buffer = np.zeros(4096 + 64, np.float32)
    plus_one = []
    for offset in range(0, 16, 4):  # (0, 16, 32, 48 bytes past a multiple of 64)
        start = (-buffer.ctypes.data % 64) // 4 + offset
        out = buffer[start:start + 4096].reshape(1, 4096)
        assert np.array_equal(blas.gemm(row, w, out), expected), offset
        out[...] = 1.0
        plus_one.append(blas.gemm(row, w, out, beta=1.0).copy())  # (beta = 1: the same bits wherever it lies)
    assert all(np.array_equal(plus_one[0], other) for other in plus_one[1:])


def _run_without_compiler(body, cache, **environ):
    """``body`` in a fresh process on 2 threads with no C compiler (and an empty cache: nothing linked before)."""
    env = {name: value for name, value in os.environ.items() if name not in ("MKL_NUM_THREADS", "MINILORA_BLAS")}
    env.update(PYTHONPATH=ROOT, OMP_NUM_THREADS="2", MINILORA_NUM_THREADS="2", MINILORA_CACHE_DIR=str(cache),
               CC=os.path.join(str(cache), "no-compiler-here"), **environ)
    code = "import warnings, json\nwarnings.simplefilter('always')\n" + TORCH_PRODUCTS + MINILORA_PRODUCT + textwrap.dedent(body)
    done = background_runs.run_process([sys.executable, "-c", code], env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_without_a_compiler_torch_imported_later_keeps_its_threads(tmp_path):
    """torch's products on 2 threads and then 1 (torch_digests): the 2-thread ones differ from the 1-thread ones
    (MKL's threads split K), unless torch's MKL calls went to libmkl_rt's one thread."""
    (minilora_first, warned) = _run_without_compiler("""
        minilora_product()  # (MKL would be loaded now, before torch is imported)
        digests = torch_digests()
        print(json.dumps([digests[:8] != digests[8:], ml.blas.library()]))""", tmp_path)
    # torch's threads split K as they do alone (where the bits show it: THREADS_SHOW_IN_BITS); minilora on OpenBLAS
    assert (minilora_first[0] or not THREADS_SHOW_IN_BITS) and minilora_first[1] == "openblas"
    assert "not MKL" in warned and "install a C compiler" in warned
    (torch_first, warned) = _run_without_compiler("""
        before = torch_digests()
        minilora_product()
        after = torch_digests()
        print(json.dumps([before == after, before[:8] != before[8:], ml.blas.library()]))""", tmp_path)
    # torch imported first: its own MKL found first, left alone
    assert torch_first[0] and (torch_first[1] or not THREADS_SHOW_IN_BITS) and torch_first[2] == "mkl"
    assert "not MKL" not in warned


def test_without_a_compiler_asking_for_mkl_takes_it_with_a_warning(tmp_path):
    (result, warned) = _run_without_compiler("""
        minilora_product()
        print(json.dumps(ml.blas.library()))""", tmp_path, MINILORA_BLAS="mkl")
    assert result == "mkl" and "torch's products then run on one thread" in warned
