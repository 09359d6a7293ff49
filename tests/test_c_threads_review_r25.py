"""An adversarial review of gemm_pool's C threads and AdamW's one compiled pass: the cases a user can reach
where they broke "the same bits as the NumPy code" or the hand-over between threads.

- more threads than the pool has slots (set_num_threads(65)): the caller's claims wrote past ``claimed[64]``
  and the process hung; now the pool declines and NumPy's 65 blocks run;
- two threads calling ``gemm_pool.run`` at once: the second's job mixed into the first's (a hang); now refused;
- the blocks counted by a LoRA backward and again by ``parallel.products_run``, with another thread's
  ``set_num_threads`` between them: slabs of a sum never written (wrong gradients) or written past the end;
- a matrix times its own transpose (a Linear's dW = dY^T X with dY X): NumPy's matmul calls syrk there, the
  pool called gemm, other roundings;
- AdamW with a gradient that IS the weight (``p.grad = p.detach()``): the NumPy update (and torch's) shrinks
  it with the weight before the moments read it; the one pass read the old one through ``restrict`` pointers;
- ``gemm_pool.run`` under ``MINILORA_GEMM_POOL=0`` or without its library: it ran, or raised AttributeError.
"""
import importlib
import os
import sys

import numpy as np
import pytest

import minilora as ml
from minilora import float32_math, gemm_pool, parallel
from minilora.ops import lora as L
from minilora.optim import AdamW

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import background_runs  # noqa: E402  (tests/, on the path just above)
from test_gemm_pool_r25 import threads  # noqa: E402,F401  (the fixture: set_num_threads, the count put back)

pytestmark = pytest.mark.skipif(not gemm_pool.available(), reason="no OpenBLAS CBLAS or no C compiler here")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


# The pool's blocks compared with NumPy's own products of the same blocks: the pool over NumPy's OpenBLAS. (With MKL
# as minilora's BLAS the pool calls MKL's ?gemm, whose bits are not OpenBLAS's: on an AMD EPYC, Zen 4, the float32
# products below differed; on the Intel host they had happened to agree.)
OPENBLAS = {**ENV, "MINILORA_BLAS": "openblas"}


def _in_a_child(code, env=ENV):
    """``code``'s stdout, run in a fresh Python (what it tests could corrupt this process's memory before the fix)."""
    done = background_runs.run_process([sys.executable, "-c", code], env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


SIXTY_FIVE_THREADS = """
import numpy as np
from minilora import parallel
parallel.set_num_threads(65)
rng = np.random.default_rng(0)
a, w = rng.standard_normal((8192, 256)).astype(np.float32), rng.standard_normal((256, 256)).astype(np.float32)
got = parallel.matmul(a, w.T)
print(np.array_equal(got, np.concatenate([rows @ w.T for rows in np.array_split(a, 65)])))
"""


def test_more_threads_than_the_pool_has_slots_run_numpys_blocks():
    assert _in_a_child(SIXTY_FIVE_THREADS, OPENBLAS).split() == ["True"]


TWO_CALLERS = """
import threading
import numpy as np
from minilora import gemm_pool, parallel
rng = np.random.default_rng(0)
jobs = []
for _ in range(2):
    a, b = rng.standard_normal((1000, 200)).astype(np.float32), rng.standard_normal((200, 150)).astype(np.float32)
    jobs.append((a, b, np.concatenate([rows @ b for rows in np.array_split(a, 2)])))
gemm_pool.available()  # (compiled before the threads start)
wrong = []
def caller(a, b, expected):
    for _ in range(200):
        out = np.empty_like(expected)
        with parallel.computing():
            if gemm_pool.run(len(a), 2, [gemm_pool.Product(a, b, out)]) and not np.array_equal(out, expected):
                wrong.append(1)
callers = [threading.Thread(target=caller, args=job) for job in jobs]
for t in callers:
    t.start()
for t in callers:
    t.join()
print(len(wrong))
"""


def test_two_threads_calling_the_pool_at_once_are_not_mixed():
    assert _in_a_child(TWO_CALLERS, OPENBLAS).split() == ["0"]


MORE_BLOCKS_THAN_SLABS = """
import numpy as np
from minilora import gemm_pool, parallel
rng = np.random.default_rng(0)
a, b = rng.standard_normal((8, 900)).astype(np.float32), rng.standard_normal((900, 6)).astype(np.float32)
slabs = np.zeros((2, 8, 6), np.float32)  # counted for 2 blocks; 3 run
with parallel.computing():
    print(gemm_pool.run(900, 3, [gemm_pool.Product(a, b, slabs, split="sum")]))
"""


def test_a_sum_with_fewer_slabs_than_blocks_is_declined():
    assert _in_a_child(MORE_BLOCKS_THAN_SLABS).split() == ["False"]


def _layer(rng, M, K, N, r):
    return [rng.standard_normal(shape).astype(np.float32) for shape in ((M, K), (N, K), (r, K), (N, r), (M, N))]


def _lora_backward(X, W0, A, B, dY, U, s, in_c_threads):
    work, M = parallel.product_work(W0.size), len(X)
    V, dX = np.empty((M, len(A)), np.float32), np.empty(X.shape, np.float32)
    grads = L._backward_in_c_threads(dY, X, U, None, V, dX, W0, A, B, s, True, True, work) if in_c_threads else None
    if grads is None:
        grads = L._backward_in_python(dY, X, U, None, V, dX, W0, A, B, s, True, True, work)
    return (V, dX) + tuple(grads)


def test_a_thread_count_changed_between_counting_and_running_the_blocks(threads, monkeypatch):
    threads(2)
    X, W0, A, B, dY = _layer(np.random.default_rng(1), 1600, 128, 96, 4)
    s = np.float32(2)
    U = X @ A.T
    expected = _lora_backward(X, W0, A, B, dY, U, s, in_c_threads=False)
    real = parallel.products_run

    def after_another_threads_set_num_threads(*args, **options):
        parallel.set_num_threads(2)  # (lands after the backward counted 4 blocks for its sums' slabs)
        return real(*args, **options)
    monkeypatch.setattr(parallel, "products_run", after_another_threads_set_num_threads)
    threads(4)
    for got, want in zip(_lora_backward(X, W0, A, B, dY, U, s, in_c_threads=True), expected):
        np.testing.assert_array_equal(got, want, strict=True)


def _pool_and_numpy(monkeypatch, compute):
    results = []
    for pool in ("1", "0"):
        monkeypatch.setenv("MINILORA_GEMM_POOL", pool)
        results.append(compute())
    return results


def test_a_matrix_times_its_own_transpose_is_numpys_syrk(threads, monkeypatch):
    M = importlib.import_module("minilora.ops.matmul")  # (minilora.ops.matmul is also a function)
    threads(2)
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((900, 130)).astype(np.float32), rng.standard_normal((130, 130)).astype(np.float32)

    def linear_backward_of_its_own_input():  # dY is X: dW = X^T X, whole in one block
        gx = np.empty(x.shape, np.float32)
        gw, _ = parallel.input_and_weight_grads(M._linear_backward_rows, x, x, gx, w, True, False,
                                                as_products=M._linear_backward_products)
        return gx, gw
    (pool_gx, pool_gw), (numpy_gx, numpy_gw) = _pool_and_numpy(monkeypatch, linear_backward_of_its_own_input)
    np.testing.assert_array_equal(pool_gx, numpy_gx, strict=True)
    np.testing.assert_array_equal(pool_gw, numpy_gw, strict=True)
    a = rng.standard_normal((400, 1500)).astype(np.float32)  # block 0 of the rows is a[:200], b its transpose
    pool_way, numpy_way = _pool_and_numpy(monkeypatch, lambda: parallel.matmul(a, a[:200].T))
    np.testing.assert_array_equal(pool_way, numpy_way, strict=True)


@pytest.mark.skipif(not float32_math.native_available(), reason="no C compiler: the NumPy update runs")
@pytest.mark.parametrize("shape", [(100, 200), (10, 10)])  # shared out among threads; gathered with no other
def test_adamw_with_a_gradient_that_is_the_weight_is_the_numpy_update(shape, monkeypatch):
    w = np.random.default_rng(3).standard_normal(shape).astype(np.float32)

    def train():
        p = ml.nn.Parameter(ml.tensor(w.copy()))
        p.grad = p.detach()  # the same memory: the weight decay shrinks the gradient too
        opt = AdamW([p], lr=1e-2, weight_decay=0.5)
        for _ in range(3):
            opt.step()
        return p.numpy()
    compiled = train()
    # the NumPy update with the one pass declined (not numpy_port(): the roots are MKL's compiled sqrt, round 27)
    monkeypatch.setattr(float32_math, "adamw_step", lambda *a, **k: False)
    numpy_way = train()
    np.testing.assert_array_equal(compiled.view(np.uint32), numpy_way.view(np.uint32), strict=True)


def test_the_pool_switched_off_or_missing_runs_nothing(monkeypatch):
    a, b = np.ones((600, 64), np.float32), np.ones((64, 32), np.float32)
    out = np.zeros((600, 32), np.float32)
    monkeypatch.setenv("MINILORA_GEMM_POOL", "0")
    assert gemm_pool.run(600, 2, [gemm_pool.Product(a, b, out)]) is False
    monkeypatch.setenv("MINILORA_GEMM_POOL", "1")
    monkeypatch.setattr(gemm_pool, "_library", None)  # (no compiler, or another thread still compiling it)
    monkeypatch.setattr(gemm_pool, "_loaded", True)
    assert gemm_pool.run(600, 2, [gemm_pool.Product(a, b, out)]) is False
    assert not out.any()


def _large_lora_layer_step():
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.models import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=64, hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=512)
    model = get_peft_model(LlamaForCausalLM(config, dtype=ml.float32), LoraConfig(r=4, target_modules="all-linear"))
    ids = np.random.default_rng(4).integers(0, 64, size=(4, 256))
    model(ids, labels=ids).loss.backward()


def test_a_large_lora_layer_runs_the_learners_region_not_the_c_threads(threads, monkeypatch):
    """Exercise 4.2's and 4.3's regions stubbed (as a student copy's are the learner's): the C threads, which
    compute the solution's products, must step aside for them in a layer large enough to split."""
    paths = pytest.importorskip("test_exercise_paths_r21")
    threads(2)
    ran = []
    real = gemm_pool.run
    monkeypatch.setattr(gemm_pool, "run", lambda *args: ran.append(real(*args)) or ran[-1])
    _large_lora_layer_step()
    assert any(ran)  # (the layer is large enough for the C threads, as shipped)
    with paths.stubbed("4.2"), pytest.raises(NotImplementedError, match="stub"):
        _large_lora_layer_step()
    X, W0, A, B, dY = _layer(np.random.default_rng(5), 1600, 128, 96, 4)
    with paths.stubbed("4.3"):
        assert _lora_backward_in_c_threads(X, W0, A, B, dY) is None


def _lora_backward_in_c_threads(X, W0, A, B, dY):
    V, dX = np.empty((len(X), len(A)), np.float32), np.empty(X.shape, np.float32)
    return L._backward_in_c_threads(dY, X, X @ A.T, None, V, dX, W0, A, B, np.float32(2), True, True,
                                    parallel.product_work(W0.size))
