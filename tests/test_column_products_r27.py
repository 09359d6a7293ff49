"""A weight's gradient summed over the rows without the product array (round 27).

``(g * b).sum(0)`` -- RMSNorm's weight gradient, the gradient times the normalised input -- was a product array
and then torch's column sum, its column ranges one after the other (~350 us of a [1024, 256] RMSNorm backward's
~800 on 2 vCPUs of an Intel Xeon). ``float32_sums.column_sums_of_products`` adds the same rounded products in the
same order in one compiled pass, torch's column ranges side by side in gemm_pool's C threads: it must give
exactly cascade_sum's bits of the product array, and torch's, for every thread count and shape it takes.
"""
import numpy as np
import pytest

from minilora import float32_sums, native, parallel

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(float32_sums._native_library() is None,
                                reason=f"no compiled float32_sums: {native.why_unavailable}")

SHAPES = [(1024, 256), (1024, 688), (37, 1000), (4096, 33), (2000, 7), (300, 4097), (129, 65)]


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"{n}threads")
def threads(request):
    before, before_torch = parallel.num_threads(), torch.get_num_threads()
    parallel.set_num_threads(request.param)
    torch.set_num_threads(request.param)
    yield request.param
    parallel.set_num_threads(before)
    torch.set_num_threads(before_torch)


def _operands(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 3).astype(dtype), rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_the_product_arrays_sum_and_torchs(shape, dtype, threads):
    x, y = _operands(shape, dtype)
    got = float32_sums.column_sums_of_products(x, y)
    assert got is not None and got.dtype == dtype and got.shape == (shape[1],)
    np.testing.assert_array_equal(got, float32_sums.cascade_sum(np.ascontiguousarray(x * y), (0,)))
    np.testing.assert_array_equal(got, (torch.from_numpy(x) * torch.from_numpy(y)).sum(0).numpy())


def test_special_values_follow_the_products():
    x, y = _operands((512, 96), np.float32, seed=1)
    x[3, 5], y[7, 6], x[9, 40], y[9, 40] = np.nan, np.inf, 1e30, 1e30  # NaN, inf * finite, an overflowing product
    x[:, 90] = -0.0
    got = float32_sums.column_sums_of_products(x, y)
    np.testing.assert_array_equal(got, (torch.from_numpy(x) * torch.from_numpy(y)).sum(0).numpy())


@pytest.mark.parametrize("case", ["short", "one row", "one column", "strided", "dtypes", "shapes", "3-d"])
def test_declines_what_cascade_sum_adds_otherwise(case):
    x, y = _operands((64, 32), np.float32)  # 2048 elements: the short form's
    big_x, big_y = _operands((256, 64), np.float32)
    calls = {"short": (x, y), "one row": (big_x[:1], big_y[:1]), "one column": (big_x[:, :1], big_y[:, :1]),
             "strided": (big_x[:, ::2], big_y[:, ::2]), "dtypes": (big_x, big_y.astype(np.float64)),
             "shapes": (big_x, big_y[:128]), "3-d": (big_x.reshape(4, 64, 64), big_y.reshape(4, 64, 64))}
    assert float32_sums.column_sums_of_products(*calls[case]) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rms_norm_weight_gradient_is_torchs(dtype, threads):
    import minilora

    rng = np.random.default_rng(2)
    x, w, g = (rng.standard_normal(s).astype(dtype) for s in ((8, 128, 256), (256,), (8, 128, 256)))
    mx, mw = minilora.tensor(x, requires_grad=True), minilora.tensor(w, requires_grad=True)
    minilora.nn.functional.rms_norm(mx, (256,), mw, 1e-6).backward(minilora.tensor(g))
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    torch.nn.functional.rms_norm(tx, (256,), tw, 1e-6).backward(torch.tensor(g))
    np.testing.assert_array_equal(mw.grad.numpy(), tw.grad.numpy())
    np.testing.assert_array_equal(mx.grad.numpy(), tx.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1024, 256), (300, 4097), (3, 512, 96)], ids=str)
def test_column_sums_ranges_side_by_side_are_torchs(shape, dtype, threads):
    """cascade_sum's own column sums (a bias gradient: ``dY.sum(0)``) take the same side-by-side ranges."""
    x, _ = _operands(shape, dtype)
    axes = tuple(range(len(shape) - 1))
    np.testing.assert_array_equal(float32_sums.cascade_sum(x, axes), torch.from_numpy(x).sum(axes).numpy())
    if len(shape) == 2:
        np.testing.assert_array_equal(float32_sums._column_ranges_side_by_side(x), torch.from_numpy(x).sum(0).numpy())
