"""MKL as minilora's BLAS (``pip install minilora[mkl]``): torch's CPU products bit for bit.

torch's CPU build multiplies float32/float64 matrices with MKL; NumPy's wheels with OpenBLAS. The two sum a
product's K terms in different orders, so from K of a few hundred on, ``x @ w.T`` differed from torch's in the
last bits (``torch.matmul``, ``F.linear``, a LoRA layer and their gradients). With Intel's ``mkl`` wheel installed,
``minilora.blas`` calls MKL's ``cblas_?gemm`` on one thread per block of rows, and ``blas.matmul`` puts NumPy's
``@`` of the ops through it. The reference runs torch on one thread (conftest): MKL on several threads may split
the K sum (torch's own products with K = 3000 differ between its 1- and 2-thread runs).
"""
import ctypes

import numpy as np
import pytest

import minilora as ml
from minilora import blas

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.skipif(blas._mkl_library() is None, reason="the `mkl` wheel (minilora[mkl]) is not installed")

# (M, K, N): K past OpenBLAS's 256-deep blocks, ragged sizes, one thin side (LoRA's rank)
SHAPES = [(7, 1000, 13), (64, 300, 50), (33, 517, 1025), (300, 3000, 5), (128, 688, 256), (96, 1024, 8), (96, 8, 1024)]


@pytest.fixture
def mkl():
    before = blas.select("mkl")
    yield
    blas.select(before or "openblas")


def _thread_settings(monkeypatch):
    """Yields (threads, pool) for 1, 2 and 3 threads, with and without the C threads (gemm_pool), each in force
    while the caller's loop body runs."""
    for threads in (1, 2, 3):
        for pool in ("1", "0"):
            monkeypatch.setenv("MINILORA_GEMM_POOL", pool)
            before = ml.parallel.num_threads()
            ml.parallel.set_num_threads(threads)
            try:
                yield threads, pool
            finally:
                ml.parallel.set_num_threads(before)


def _pair(shape_a, shape_b, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape_a).astype(dtype), rng.standard_normal(shape_b).astype(dtype)


def test_chosen_by_default_where_installed(monkeypatch):
    monkeypatch.setattr(blas, "_choice", None)
    monkeypatch.delenv("MINILORA_BLAS", raising=False)
    assert blas.library() == "mkl"
    monkeypatch.setattr(blas, "_choice", None)
    monkeypatch.setenv("MINILORA_BLAS", "openblas")
    assert blas.library() == "openblas"
    monkeypatch.setattr(blas, "_choice", None)


def test_bad_choices_are_named(monkeypatch):
    monkeypatch.setattr(blas, "_choice", None)
    monkeypatch.setenv("MINILORA_BLAS", "acml")
    with pytest.raises(ValueError, match="MINILORA_BLAS='acml'.*'mkl' or 'openblas'"):
        blas.library()
    monkeypatch.setattr(blas, "_choice", None)
    with pytest.raises(ValueError, match="select\\('atlas'\\)"):
        blas.select("atlas")
    monkeypatch.setattr(blas, "_mkl_library", lambda: None)
    with pytest.raises(RuntimeError, match="pip install minilora\\[mkl\\]"):
        blas.select("mkl")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_matmul_and_linear_are_torchs(mkl, M, K, N, dtype):
    x, w = _pair((M, K), (N, K), dtype)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    assert np.array_equal(ml.tensor(x).matmul(ml.tensor(w).T).numpy(), torch.matmul(tx, tw.T).numpy())
    assert np.array_equal(ml.nn.functional.linear(ml.tensor(x), ml.tensor(w)).numpy(), F.linear(tx, tw).numpy())
    assert np.array_equal((ml.tensor(x) @ ml.tensor(w.T.copy())).numpy(), (tx @ torch.from_numpy(w.T.copy())).numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_and_broadcast_products_are_torchs(mkl, dtype):
    cases = [((4, 40, 600), (4, 600, 24)), ((3, 1, 20, 700), (5, 700, 9)), ((6, 50, 400), (400, 30))]
    for shape_a, shape_b in cases:
        a, b = _pair(shape_a, shape_b, dtype, seed=len(shape_a))
        ours = ml.matmul(ml.tensor(a), ml.tensor(b)).numpy()
        assert np.array_equal(ours, torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()), (shape_a, shape_b)
    a, b = _pair((5, 30, 500), (5, 500, 20), dtype)
    assert np.array_equal(ml.bmm(ml.tensor(a), ml.tensor(b)).numpy(), torch.bmm(torch.from_numpy(a), torch.from_numpy(b)).numpy())


def test_linear_gradients_are_torchs(mkl):
    x, w = _pair((48, 700), (300, 700), np.float32, seed=3)
    g = np.random.default_rng(4).standard_normal((48, 300)).astype(np.float32)
    mx, mw = ml.tensor(x, requires_grad=True), ml.tensor(w, requires_grad=True)
    ml.nn.functional.linear(mx, mw).backward(ml.tensor(g))
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    F.linear(tx, tw).backward(torch.from_numpy(g))
    assert np.array_equal(mx.grad.numpy(), tx.grad.numpy())
    assert np.array_equal(mw.grad.numpy(), tw.grad.numpy())


def _lora_layers(peft, base_w, A, B, alpha, bias=None):
    """PEFT's and minilora's LoRA layer of one ``proj`` Linear, holding the same weights."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(base_w.shape[1], base_w.shape[0], bias=bias is not None)

    tnet = Net()
    tnet.proj.weight.data = torch.from_numpy(base_w.copy())
    if bias is not None:
        tnet.proj.bias.data = torch.from_numpy(bias.copy())
    options = dict(r=len(A), lora_alpha=16, use_rslora=True) if alpha == "rslora" else dict(r=len(A), lora_alpha=alpha)
    tnet = peft.get_peft_model(tnet, peft.LoraConfig(target_modules=["proj"], **options))
    mnet = ml.nn.Module()
    mnet.proj = ml.nn.Linear(base_w.shape[1], base_w.shape[0], bias=bias is not None)
    mnet.proj.weight.data = ml.tensor(base_w.copy())
    if bias is not None:
        mnet.proj.bias.data = ml.tensor(bias.copy())
    mnet = ml.lora.get_peft_model(mnet, ml.lora.LoraConfig(target_modules=["proj"], **options))
    layers = tnet.base_model.model.proj, mnet.base_model.model.proj
    for layer, wrap in zip(layers, (torch.from_numpy, ml.tensor)):
        layer.lora_A["default"].weight.data = wrap(A.copy())
        layer.lora_B["default"].weight.data = wrap(B.copy())
    return layers


def _forward_and_grads(layer, wrap, x, g):
    tx = wrap(x.copy())
    tx.requires_grad_(True)
    y = layer(tx)
    y.backward(wrap(g))
    return [y.detach().numpy(), tx.grad.numpy(), layer.lora_A["default"].weight.grad.numpy(),
            layer.lora_B["default"].weight.grad.numpy()]


# s = alpha / r: 2, 4, 0.5 (a power of two: one scaled product rounds as PEFT's two steps), 1.5 and rsLoRA's
# 16 / sqrt(8) (PEFT's own order: _forward_in_pefts_order; before, ~20% of outputs and most gradients differed)
@pytest.mark.parametrize("alpha,with_bias", [(16, False), (32, False), (4, False), (16, True), (12, False),
                                              (12, True), ("rslora", False)])
def test_lora_layer_is_peft_bit_for_bit_past_256_features(mkl, monkeypatch, alpha, with_bias):
    """A LoRA layer of a 640 -> 384 Linear: forward and every gradient as PEFT's, on 1, 2 or 3 threads, with and
    without the C threads. (Before: dA and dB summed block by block, so they changed with the thread count.)"""
    peft = pytest.importorskip("peft")
    rng = np.random.default_rng(5)
    base_w, A, B = (rng.standard_normal(shape).astype(np.float32) / 25 for shape in ((384, 640), (8, 640), (384, 8)))
    x = rng.standard_normal((4, 60, 640)).astype(np.float32)
    g = rng.standard_normal((4, 60, 384)).astype(np.float32)
    bias = rng.standard_normal(384).astype(np.float32) if with_bias else None
    theirs, ours = _lora_layers(peft, base_w, A, B, alpha, bias)
    expected = _forward_and_grads(theirs, torch.from_numpy, x, g)
    for threads, pool in _thread_settings(monkeypatch):
        for name in ("lora_A", "lora_B"):
            getattr(ours, name)["default"].weight.grad = None
        got = _forward_and_grads(ours, ml.tensor, x, g)
        for what, a, b in zip(("y", "dx", "dA", "dB"), got, expected):
            assert np.array_equal(a, b), (what, threads, pool)


def test_threads_and_the_c_pool_do_not_change_the_bits(mkl, monkeypatch):
    """Row blocks on 1, 2 or 3 threads, in C threads (gemm_pool) or Python's: each block is MKL's product of
    those rows, which sums each element as the whole product does."""
    x, w = _pair((700, 640), (384, 640), np.float32, seed=6)
    results = [ml.nn.functional.linear(ml.tensor(x), ml.tensor(w)).numpy() for _ in _thread_settings(monkeypatch)]
    for other in results[1:]:
        assert np.array_equal(other, results[0])
    assert np.array_equal(results[0], F.linear(torch.from_numpy(x), torch.from_numpy(w)).numpy())


def test_openblas_still_chosen_on_request(monkeypatch):
    """``select("openblas")`` gives NumPy's own products back (the numbers of every earlier round)."""
    before = blas.select("openblas")
    try:
        x, w = _pair((7, 1000), (13, 1000), np.float32)
        assert np.array_equal(ml.tensor(x).matmul(ml.tensor(w).T).numpy(), x @ w.T)
        mkl_sgemm = ctypes.cast(blas._mkl_library().cblas_sgemm_64, ctypes.c_void_p).value
        assert blas.gemm_address(np.float32) not in (None, mkl_sgemm)  # (the C pool calls OpenBLAS's too)
    finally:
        blas.select(before or "openblas")


@pytest.mark.parametrize("M,K,N", [(128, 688, 256), (33, 2000, 65), (64, 300, 50)])
def test_linear_with_bias_starts_from_the_bias_as_torchs_addmm(mkl, M, K, N):
    """nn.Linear's default bias: torch's addmm fills the output with the bias and lets MKL add the products into it
    block by block; adding the bias after the product differed in 33-53% of outputs from K = 688 on."""
    rng = np.random.default_rng(M)
    x, w, b = (rng.standard_normal(shape).astype(np.float32) for shape in ((M, K), (N, K), (N,)))
    expected = F.linear(*map(torch.from_numpy, (x, w, b))).numpy()
    for threads in (1, 2):
        before = ml.parallel.num_threads()
        ml.parallel.set_num_threads(threads)
        try:
            assert np.array_equal(ml.nn.functional.linear(*map(ml.tensor, (x, w, b))).numpy(), expected), threads
        finally:
            ml.parallel.set_num_threads(before)


@pytest.mark.parametrize("beta,alpha", [(1, 1), (0.5, 2.0), (0, 0.3), (1, 0.125)])
def test_addmm_and_baddbmm_are_torchs_gemm(mkl, beta, alpha):
    """torch fills the result with ``input`` and hands MKL alpha and beta; minilora composed a product and a scaled
    sum (35-93% of outputs off at K = 300-2000). The gradients stay derivatives.yaml's."""
    rng = np.random.default_rng(7)
    i, a, b = (rng.standard_normal(shape).astype(np.float32) for shape in ((33, 65), (33, 2000), (2000, 65)))
    expected = torch.addmm(*map(torch.from_numpy, (i, a, b)), beta=beta, alpha=alpha).numpy()
    assert np.array_equal(ml.addmm(*map(ml.tensor, (i, a, b)), beta=beta, alpha=alpha).numpy(), expected)
    row = torch.addmm(torch.from_numpy(i[0]), torch.from_numpy(a), torch.from_numpy(b), beta=beta, alpha=alpha)
    assert np.array_equal(ml.addmm(ml.tensor(i[0]), ml.tensor(a), ml.tensor(b), beta=beta, alpha=alpha).numpy(),
                          row.numpy())  # (a bias row, broadcast: nn.Linear written out)
    i3, a3, b3 = (rng.standard_normal(shape).astype(np.float32) for shape in ((3, 40, 24), (3, 40, 700), (3, 700, 24)))
    expected = torch.baddbmm(*map(torch.from_numpy, (i3, a3, b3)), beta=beta, alpha=alpha).numpy()
    assert np.array_equal(ml.baddbmm(*map(ml.tensor, (i3, a3, b3)), beta=beta, alpha=alpha).numpy(), expected)
    ours = [ml.tensor(x, requires_grad=True) for x in (i, a, b)]
    theirs = [torch.tensor(x, requires_grad=True) for x in (i, a, b)]
    ml.addmm(*ours, beta=beta, alpha=alpha).sum().backward()
    torch.addmm(*theirs, beta=beta, alpha=alpha).sum().backward()
    for x, y in zip(ours, theirs):
        np.testing.assert_allclose(x.grad.numpy(), y.grad.numpy(), rtol=1e-5, atol=1e-5)
