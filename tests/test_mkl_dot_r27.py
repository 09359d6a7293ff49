"""torch's float32/float64 dot products (MKL's sdot/ddot) and LBFGS, bit for bit, on an Intel AVX-512 CPU (round 27).

MKL sums a dot product in 4 accumulators of 16 (float) or 8 (double) fused lanes, folded at the end
(minilora/mkl_dot.py); NumPy's BLAS adds otherwise, so most dot products of 64 or more elements were an ulp or more
off torch's, and LBFGS (dot products, ``add_`` with alpha fused, ``|g|.sum()``) drifted from torch's after a step.
Elsewhere (another CPU) the order is not claimed: the bit-for-bit tests skip.
"""
import numpy as np
import pytest

import minilora
from minilora import float32_math, mkl_dot
from minilora.optim import LBFGS

torch = pytest.importorskip("torch")
measured = pytest.mark.skipif(not mkl_dot.APPLIES, reason="MKL's dot order was measured on an Intel AVX-512 CPU")

SIZES = [1, 7, 16, 63, 64, 65, 100, 129, 200, 255, 300, 1000, 4095]
DTYPES = [np.float32, np.float64]


def _vectors(n, dtype, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)


def _planted(n, dtype, first, second):
    """Ones, but +-2^40 (float32) / +-2^60 (float64) at two positions: the ones that survive say where they met."""
    x, big = np.ones(n, dtype), dtype(2.0 ** (40 if dtype == np.float32 else 60))
    x[first], x[second] = big, -big
    return x, np.ones(n, dtype)


@measured
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_planted_operands_meet_where_mkls_meet(dtype):
    for n in (24, 80, 137, 300):
        pairs = [(0, 1), (0, 2), (0, 8), (0, 16), (0, 32), (0, 64), (n - 1, 0), (n // 2, n - 3)]
        for first, second in [(a, b) for a, b in pairs if b < n]:
            x, y = _planted(n, dtype, first, second)
            want = torch.dot(torch.from_numpy(x), torch.from_numpy(y)).item()
            assert minilora.dot(minilora.tensor(x), minilora.tensor(y)).item() == want, (n, first, second)


@measured
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["dot", "vdot", "inner", "matmul", "inner_of_rows"])
def test_vector_products_are_torchs(name, dtype):
    calls = {"inner_of_rows": lambda lib, a, b: lib.inner(a[None], b[None])}
    call = calls.get(name, lambda lib, a, b: getattr(lib, name)(a, b))
    for n in SIZES:
        x, y = _vectors(n, dtype, n)
        want = call(torch, torch.from_numpy(x), torch.from_numpy(y)).numpy()
        got = call(minilora, minilora.tensor(x), minilora.tensor(y)).numpy()
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (name, n)


@measured
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_numpy_reference_and_compiled_kernel_agree_with_torch(dtype):
    for n in range(0, 300, 11):
        x, y = _vectors(n, dtype, 1000 + n)
        want = torch.dot(torch.from_numpy(x), torch.from_numpy(y)).item()
        with float32_math.numpy_port():
            assert mkl_dot.dot(x, y) == want, n
        assert mkl_dot.dot(x, y) == want, n
    x = np.arange(20, dtype=dtype)  # not claimed (the BLAS sum stands): strided operands, integers
    assert mkl_dot.dot(x[::2], x[:10]) is None and mkl_dot.dot(x.astype(np.int64), x.astype(np.int64)) is None


def _lbfgs_weights(lib, dtype, line_search, steps=3):
    """A problem whose gradients are elementwise (exact in both libraries): only LBFGS's own arithmetic differs."""
    rng = np.random.default_rng(0)
    target, scale, start = rng.standard_normal((3, 7, 40))
    make = (lambda a: torch.tensor(a, dtype=getattr(torch, dtype.__name__))) if lib is torch else \
        (lambda a: minilora.tensor(a.astype(dtype)))
    weight, target, scale = make(start * 0.1).requires_grad_(), make(target), make(abs(scale))
    optimizer = (torch.optim.LBFGS if lib is torch else LBFGS)([weight], lr=0.5, max_iter=6, history_size=5,
                                                               line_search_fn=line_search)

    def closure():
        optimizer.zero_grad()
        loss = (((weight - target) ** 2) * scale + 0.05 * weight ** 4).sum()
        loss.backward()
        return loss
    for _ in range(steps):
        optimizer.step(closure)
    return weight.detach().numpy()


@measured
@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_lbfgs_weights_are_torchs(dtype, line_search):
    want, got = _lbfgs_weights(torch, dtype, line_search), _lbfgs_weights(minilora, dtype, line_search)
    assert got.tobytes() == want.tobytes()


@measured
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["mv", "matmul", "addmv", "addmv_scaled", "addmv_beta_0"])
def test_matrix_vector_products_are_torchs(name, dtype):
    rng = np.random.default_rng(7)
    y = {lib: lib.ones(1, dtype=getattr(lib, dtype.__name__)) / 3 for lib in (torch, minilora)}
    calls = {"addmv": lambda lib, m, v: lib.addmv(y[lib], m, v, beta=0.5),
             "addmv_scaled": lambda lib, m, v: lib.addmv(y[lib], m, v, beta=0.5, alpha=1.7),  # one fma at the end
             "addmv_beta_0": lambda lib, m, v: lib.addmv(y[lib], m, v, beta=0, alpha=1.7)}
    call = calls.get(name, lambda lib, m, v: getattr(lib, name)(m, v))
    for rows, k in [(1, 100), (2, 40), (3, 7), (5, 16), (7, 50), (8, 24), (17, 33), (40, 301), (40, 1)]:
        mat, vec = rng.standard_normal((rows, k)).astype(dtype), rng.standard_normal(k).astype(dtype)
        want = call(torch, torch.from_numpy(mat), torch.from_numpy(vec)).numpy()
        got = call(minilora, minilora.tensor(mat), minilora.tensor(vec)).numpy()
        assert got.tobytes() == want.tobytes(), (name, rows, k)
        with float32_math.numpy_port():
            assert mkl_dot.rows_times_vector(mat, vec).tobytes() == torch.mv(torch.from_numpy(mat),
                                                                               torch.from_numpy(vec)).numpy().tobytes()
