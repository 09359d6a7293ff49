"""minilora.gemm_pool: a LoRA layer's products split across C threads give NumPy's numbers to the bit.

The C threads (native/gemm_pool.c) make the same CBLAS calls on the same blocks of rows as the NumPy code
of ops/lora.py (_lora_forward_rows / _lora_backward_rows under minilora.parallel), without the GIL in
between. These tests hold them to that, and to the hand-over's corner cases: workers asleep after a pause,
a thread count that changes, two Python threads at once, a forked child, the cases the pool declines.
"""
import importlib
import os
import threading

import numpy as np
import pytest

import minilora as ml
from minilora import blas, gemm_pool, parallel
from minilora.ops import lora as L

pytestmark = pytest.mark.skipif(not gemm_pool.available(), reason="no OpenBLAS CBLAS or no C compiler here")


@pytest.fixture(autouse=True)
def _blas_whose_blocks_are_its_rows():
    """The pool's products are the NumPy code's on the same blocks; where MKL's product of a block of rows is not
    those rows of the whole product (MKL on a CPU other than the measured Intel one: ops/lora.py's
    ``_blocks_of_rows_alike``), the layer does not split its products, and the pool is checked over OpenBLAS."""
    alike = L._blocks_of_rows_alike()  # (it asks blas.library(): the choice is made, select() returns it)
    before = None if alike else blas.select("openblas")
    yield
    if not alike:
        blas.select(before or "mkl")


@pytest.fixture
def threads():
    before = parallel.num_threads()
    yield parallel.set_num_threads
    parallel.set_num_threads(before)


def _layer(rng, M, K, N, r, dtype):
    X, W0, A, B = (rng.standard_normal(shape).astype(dtype) for shape in ((M, K), (N, K), (r, K), (N, r)))
    return X, W0, A, B, rng.standard_normal((M, N)).astype(dtype)


def _numpy_way(X, W0, A, B, dY, s, need_dX=True, need_dA=True, need_dB=True, keep=None):
    M, r, work = len(X), len(A), parallel.product_work(W0.size)
    U, Y, V = np.empty((M, r), X.dtype), np.empty((M, len(W0)), X.dtype), np.empty((M, r), X.dtype)
    dX = np.empty(X.shape, X.dtype) if need_dX else None
    parallel.rows(lambda *rows: L._lora_forward_rows(*rows, W0, A, B, None, s), X, keep, U, Y, work_per_row=work)
    dA, dB = L._backward_in_python(dY, X, U, keep, V, dX, W0, A, B, s, need_dA, need_dB, work)
    return U, Y, V, dX, dA, dB


def _pool_way(X, W0, A, B, dY, s, need_dX=True, need_dA=True, need_dB=True, keep=None):
    M, r, work = len(X), len(A), parallel.product_work(W0.size)
    U, Y, V = np.empty((M, r), X.dtype), np.empty((M, len(W0)), X.dtype), np.empty((M, r), X.dtype)
    dX = np.empty(X.shape, X.dtype) if need_dX else None
    assert L._forward_in_c_threads(X, keep, U, Y, W0, A, B, None, s, work)
    grads = L._backward_in_c_threads(dY, X, U, keep, V, dX, W0, A, B, s, need_dA, need_dB, work)
    assert grads is not None
    return (U, Y, V, dX) + grads


def _assert_same(a, b):
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y, strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,K,N,r", [(1024, 256, 256, 8), (1000, 256, 688, 16), (777, 688, 256, 2),
                                     (4099, 33, 65, 3), (300, 256, 256, 64), (2051, 100, 37, 5)])
def test_lora_layer_from_c_threads_is_numpys_to_the_bit(threads, dtype, M, K, N, r):
    threads(2)
    rng = np.random.default_rng(M + K + N + r)
    X, W0, A, B, dY = _layer(rng, M, K, N, r, dtype)
    s = dtype(16 / r)
    _assert_same(_pool_way(X, W0, A, B, dY, s), _numpy_way(X, W0, A, B, dY, s))


@pytest.mark.parametrize("need", [(False, True, True), (True, False, True), (True, True, False), (False, False, True)])
def test_only_the_wanted_gradients(threads, need):
    threads(2)
    X, W0, A, B, dY = _layer(np.random.default_rng(1), 800, 128, 96, 4, np.float32)
    s = np.float32(2.0)
    _assert_same(_pool_way(X, W0, A, B, dY, s, *need), _numpy_way(X, W0, A, B, dY, s, *need))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_with_dropout_as_numpy_to_the_bit(threads, dtype):
    threads(2)
    rng = np.random.default_rng(8)
    X, W0, A, B, dY = _layer(rng, 999, 160, 120, 8, dtype)
    keep = ((rng.random(X.shape) > 0.1) / dtype(0.9)).astype(dtype)  # 0 or 1/(1-p), as dropout's multipliers
    s = dtype(2.0)
    _assert_same(_pool_way(X, W0, A, B, dY, s, keep=keep), _numpy_way(X, W0, A, B, dY, s, keep=keep))
    _assert_same(_pool_way(X, W0, A, B, dY, s, True, False, True, keep=keep),
                 _numpy_way(X, W0, A, B, dY, s, True, False, True, keep=keep))


def test_three_and_four_threads_cut_the_rows_as_numpy_does(threads):
    rng = np.random.default_rng(2)
    X, W0, A, B, dY = _layer(rng, 1537, 96, 200, 6, np.float32)
    for n in (3, 4, 2):  # the pool starts workers on demand; a smaller count leaves the extra ones idle
        threads(n)
        _assert_same(_pool_way(X, W0, A, B, dY, np.float32(0.5)), _numpy_way(X, W0, A, B, dY, np.float32(0.5)))


def test_workers_asleep_after_a_pause_wake_for_the_next_job(threads, monkeypatch):
    threads(2)
    X, W0, A, B, dY = _layer(np.random.default_rng(3), 900, 64, 80, 4, np.float32)
    expected = _numpy_way(X, W0, A, B, dY, np.float32(2))
    import time
    pauses = np.random.default_rng(9).choice([0, 0.5, 2], size=200) * gemm_pool.SPIN_US * 1e-6
    for pause in pauses:  # none, within the spin, past it (the worker sleeps on its condition)
        _assert_same(_pool_way(X, W0, A, B, dY, np.float32(2)), expected)
        time.sleep(pause)


def test_two_python_threads_at_once_get_their_own_numbers(threads):
    threads(2)
    rng = np.random.default_rng(4)
    layers = [_layer(rng, 700, 64, 96, 4, np.float32) for _ in range(2)]
    expected = [_numpy_way(*layer, np.float32(2)) for layer in layers]
    errors = []

    def work(i):
        try:
            for _ in range(40):  # one of them finds the region taken and runs its blocks on its own
                M, work_ = len(layers[i][0]), parallel.product_work(layers[i][1].size)
                X, W0, A, B, dY = layers[i]
                U, Y = np.empty((M, 4), np.float32), np.empty((M, 96), np.float32)
                if not L._forward_in_c_threads(X, None, U, Y, W0, A, B, None, np.float32(2), work_):
                    L._lora_forward_rows(X, None, U, Y, W0, A, B, None, np.float32(2))
                _assert_same((U, Y), expected[i][:2])
        except BaseException as exc:
            errors.append(exc)
    pool = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors


def test_the_pool_declines_what_its_products_are_not(threads):
    threads(2)
    X, W0, A, B, dY = _layer(np.random.default_rng(5), 800, 128, 96, 4, np.float32)
    M, work = len(X), parallel.product_work(W0.size)
    U, Y = np.empty((M, 4), np.float32), np.empty((M, 96), np.float32)
    wide = np.empty((M, 256), np.float32)
    wide[:, ::2] = X
    assert not L._forward_in_c_threads(wide[:, ::2], None, U, Y, W0, A, B, None, np.float32(2), work)  # strided columns
    assert not L._forward_in_c_threads(X[:8], None, U[:8], Y[:8], W0, A, B, None, np.float32(2), work)  # too small to split
    one_rank = (A[:1], B[:, :1], np.empty((M, 1), np.float32))
    assert not L._forward_in_c_threads(X, None, one_rank[2], Y, W0, one_rank[0], one_rank[1], None, np.float32(2), work)
    threads(1)
    assert not L._forward_in_c_threads(X, None, U, Y, W0, A, B, None, np.float32(2), work)  # one thread: nothing to split
    # (set_flush_denormal(True) is no longer declined: the C threads follow the caller's MXCSR, test_faults_r26)


def test_a_lora_model_trains_to_the_same_bits_with_and_without_the_pool(threads, monkeypatch):
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.models import LlamaConfig, LlamaForCausalLM
    threads(2)
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=512)
    ids = np.random.default_rng(6).integers(0, 64, size=(4, 256))
    results, used = [], []
    real_run = gemm_pool.run
    monkeypatch.setattr(gemm_pool, "run", lambda *a, **k: used.append(real_run(*a, **k)) or used[-1])
    for pool_on in (True, False):
        used.clear()
        monkeypatch.setenv("MINILORA_GEMM_POOL", "1" if pool_on else "0")
        ml.manual_seed(0)
        model = get_peft_model(LlamaForCausalLM(config, dtype=ml.float32),
                               LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
        for p in model.parameters():  # B is zero at the start: make the LoRA branch matter
            if p.requires_grad:
                p.data.copy_(ml.randn(*p.shape) * 0.1)
        loss = model(ids, labels=ids).loss
        loss.backward()
        results.append([loss.numpy()] + [p.grad.numpy() for p in model.parameters() if p.requires_grad])
        assert any(used) == pool_on  # the pool ran the first model's layers, not the second's
    _assert_same(results[0], results[1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_the_pool_with_workers_of_its_own(threads):
    threads(2)
    X, W0, A, B, dY = _layer(np.random.default_rng(7), 800, 128, 96, 4, np.float32)
    expected = _numpy_way(X, W0, A, B, dY, np.float32(2))
    _pool_way(X, W0, A, B, dY, np.float32(2))  # the parent's workers exist before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the pool has no workers until it starts its own
        ok = False
        try:
            _assert_same(_pool_way(X, W0, A, B, dY, np.float32(2)), expected)
            ok = True
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.close(write)
    import select
    ready, _, _ = select.select([read], [], [], 60)
    answer = os.read(read, 1) if ready else b"hung"
    os.close(read)
    if not ready:
        os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert answer == b"1"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_matmul_from_c_threads_is_numpys_to_the_bit(threads, dtype, monkeypatch):
    threads(2)
    rng = np.random.default_rng(10)
    a, w = rng.standard_normal((3, 700, 96)).astype(dtype), rng.standard_normal((130, 96)).astype(dtype)
    ran = []
    real_run = gemm_pool.run
    monkeypatch.setattr(gemm_pool, "run", lambda *args: ran.append(real_run(*args)) or ran[-1])
    got = parallel.matmul(a, w.T)  # a Linear's forward: x @ W^T by blocks of rows
    assert ran == [True]
    np.testing.assert_array_equal(got, np.concatenate([blk @ w.T for blk in np.array_split(a.reshape(-1, 96), 2)]).reshape(3, 700, 130), strict=True)
    assert parallel.matmul(a.astype(np.float32), w.T.astype(np.float64)).dtype == np.float64  # mixed: NumPy's way


@pytest.mark.parametrize("count", [2, 3, 4])
@pytest.mark.parametrize("need", [(True, True), (True, False), (False, True)])
def test_a_linear_backward_side_by_side_in_c_threads_is_numpys_to_the_bit(threads, monkeypatch, count, need):
    M = importlib.import_module("minilora.ops.matmul")  # (minilora.ops.matmul is also a function)
    threads(count)
    rng = np.random.default_rng(11)
    g, x, w = (rng.standard_normal(shape).astype(np.float32) for shape in ((900, 130), (900, 70), (130, 70)))
    need_x, need_w = need
    ran = []
    real_run = gemm_pool.run
    monkeypatch.setattr(gemm_pool, "run", lambda *args: ran.append(real_run(*args)) or ran[-1])
    gx = np.empty((900, 70), np.float32) if need_x else None
    gw, _ = parallel.input_and_weight_grads(M._linear_backward_rows, g, x, gx, w, need_w, False,
                                            as_products=M._linear_backward_products)
    assert ran == [True]
    gx_numpy = np.empty((900, 70), np.float32) if need_x else None
    gw_numpy, _ = parallel.input_and_weight_grads(M._linear_backward_rows, g, x, gx_numpy, w, need_w, False)
    _assert_same((gx, gw), (gx_numpy, gw_numpy))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["add", "multiply"])
@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_large_adds_and_multiplies_in_c_threads_are_numpys_to_the_bit(threads, monkeypatch, dtype, name):
    threads(2)
    rng = np.random.default_rng(12)
    n = parallel.C_PASS_FROM + 1001
    a, b = (rng.standard_normal(n).astype(dtype) * np.exp(rng.uniform(-60, 60, n)).astype(dtype) for _ in range(2))
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, np.finfo(dtype).tiny / 4, np.finfo(dtype).max], dtype)
    a[:7], b[:7], b[7:14] = specials, specials[::-1], specials  # NaN, infinities, signed zeros, subnormals, overflow
    ran = []
    real_run = gemm_pool.run
    monkeypatch.setattr(gemm_pool, "run", lambda *args: ran.append(real_run(*args)) or ran[-1])
    got = getattr(parallel, name)(a, b)
    assert ran == [True]
    np.testing.assert_array_equal(got, getattr(np, name)(a, b), strict=True)
    assert np.array_equal(np.signbit(got), np.signbit(getattr(np, name)(a, b)))
    mixed = getattr(parallel, name)(a.astype(np.float32), b.astype(np.float64))  # another dtype out: NumPy's way
    np.testing.assert_array_equal(mixed, getattr(np, name)(a.astype(np.float32), b.astype(np.float64)), strict=True)
