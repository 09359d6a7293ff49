"""minilora.blas.gemm: ``out = alpha a @ b + beta out`` through NumPy's OpenBLAS, or NumPy operators."""
import numpy as np
import pytest

from minilora import blas

DTYPES = [np.float32, np.float64]


@pytest.fixture(params=["direct", "operators"])
def mode(request, monkeypatch):
    """Run each test through the direct BLAS call (where this NumPy has one) and the fallback."""
    if request.param == "direct" and not blas.has_direct_gemm(np.float32):
        pytest.skip("this NumPy's BLAS has no ILP64 cblas_?gemm: only the fallback runs")
    if request.param == "operators":
        monkeypatch.setattr(blas, "_cblas_gemm", lambda dtype: None)
    return request.param


def operand(rng, shape, transposed, dtype):
    """A [rows, cols] operand, stored either as it is or as the transpose of a C-contiguous array."""
    if transposed:
        return np.ascontiguousarray(rng.standard_normal(shape[::-1]).astype(dtype)).T
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (1.0, 1.0), (-0.5, 2.0), (3.0, 0.0)])
def test_gemm_matches_float64(mode, dtype, trans_a, trans_b, alpha, beta):
    rng = np.random.default_rng(0)
    M, K, N = 37, 19, 23  # odd sizes: no kernel's block size divides them
    a, b = operand(rng, (M, K), trans_a, dtype), operand(rng, (K, N), trans_b, dtype)
    out = rng.standard_normal((M, N)).astype(dtype)
    want = alpha * (a.astype(np.float64) @ b.astype(np.float64)) + beta * out.astype(np.float64)
    if beta == 0.0:
        out[...] = np.nan  # beta = 0 ignores out's old values, NaN included (as BLAS does)
    got = blas.gemm(a, b, out, alpha=alpha, beta=beta)
    assert got is out
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_on_row_blocks_and_skinny_shapes(mode, dtype):
    """The shapes LoRA gives it: a block of rows of a bigger array, r = 1 inner or outer dimension."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 16)).astype(dtype)
    A = rng.standard_normal((1, 16)).astype(dtype)
    U = np.zeros((50, 1), dtype)
    blas.gemm(X[10:30], A.T, out=U[10:30])
    np.testing.assert_allclose(U[10:30], X[10:30] @ A.T, rtol=1e-5)
    assert (U[:10] == 0).all() and (U[30:] == 0).all()  # rows outside the block untouched
    Y = rng.standard_normal((50, 8)).astype(dtype)
    B = rng.standard_normal((8, 1)).astype(dtype)
    want = Y + 2 * U @ B.T
    blas.gemm(U, B.T, out=Y, alpha=2.0, beta=1.0)
    np.testing.assert_allclose(Y, want, rtol=1e-5)


def test_gemm_falls_back_for_what_blas_cannot_take():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((12, 10)).astype(np.float32)
    b = rng.standard_normal((10, 6)).astype(np.float32)
    cases = {
        "strided view": (a[::2], b, np.zeros((6, 6), np.float32)),
        "integers": (np.arange(6).reshape(2, 3), np.arange(6).reshape(3, 2), np.zeros((2, 2), np.int64)),
        "mixed dtypes": (a, b.astype(np.float64), np.zeros((12, 6), np.float64)),
    }
    for name, (x, y, out) in cases.items():
        blas.gemm(x, y, out, beta=0.0)
        np.testing.assert_allclose(out, x @ y, rtol=1e-5, err_msg=name)
    square = rng.standard_normal((8, 8)).astype(np.float32)
    want = square @ square + square
    blas.gemm(square, square, square, beta=1.0)  # out is an input: BLAS would read overwritten values
    np.testing.assert_allclose(square, want, rtol=1e-5)


def test_gemm_names_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\) @ \(5, 2\) -> \(3, 2\)"):
        blas.gemm(np.zeros((3, 4)), np.zeros((5, 2)), np.zeros((3, 2)))


def test_openblas_thread_count_can_be_set():
    """minilora runs NumPy's OpenBLAS on one thread (minilora.parallel splits the work itself)."""
    if not blas._openblas_libraries():
        pytest.skip("NumPy's BLAS here is not OpenBLAS")
    assert blas.set_num_threads(1) is True
