"""Round 12: the tiny-tensor path gives the bits of the general path and of torch.

Micrograd-sized code (a scalar chain on 8 floats, a 2->16->16->1 MLP on 32 points) paid the float32
exactness machinery's fixed cost on every op. Small float32 sums now take a short form of torch's cascade
(``float32_sums._short_row_sums`` / ``_short_sum`` / ``_short_outer_sums``: the order written out) and the
small fused multiply-add a cheaper tie test (``float32_math._whole_array_fma``). Each is checked here against
the general path (the compiled sums or the NumPy port; C's ``fmaf``) and against torch, on both sides of
each size boundary (n - 1, n, n + 1), with signed zeros, subnormals, infinities and NaN.
"""
import numpy as np
import pytest

import minilora as ml
from minilora import float32_math, float32_sums

needs_native = pytest.mark.skipif(not float32_math.native_available(), reason="no C compiler: no compiled fmaf")

_SHORT = float32_sums._SHORT_WIDTH  # 16: whole sums and rows below it are one chain of additions
_ROWS = float32_sums._SHORT_ROWS  # 64: sums down fewer rows take the short row_sum
_WIDTHS = [1, 2, 3, 4, 5, 7, 8, 9, _SHORT - 1, _SHORT, _SHORT + 1]


def _same_bits(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def _values(shape, seed):
    """Magnitudes over 16 binades (the order of additions shows in the last bits), some -0 and subnormals."""
    rng = np.random.default_rng(seed)
    x = np.array(rng.standard_normal(shape) * np.exp2(rng.uniform(-8, 8, shape)), np.float32)
    pick = np.asarray(rng.random(shape))
    x[pick < 0.05] = -0.0
    x[(pick > 0.05) & (pick < 0.08)] = np.float32(3e-42)
    return x


def _torch_bits(torch, x, fn):
    return fn(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("width", _WIDTHS)
def test_short_row_sums_are_the_cascade(width):
    """Rows narrower than two vectors, and whole tensors of fewer than 16 elements, in the cascade's order:
    the same bits as the NumPy port of torch's cascade (and the compiled sums past the boundary)."""
    for rows in (1, 3):
        x = _values((rows, width), seed=width)
        _same_bits(float32_sums.row_sums(x), float32_sums.row_sums(x, port=True))
        _same_bits(float32_sums.row_sums(x, squares=True), float32_sums.row_sums(x, port=True, squares=True))
    flat = _values(width, seed=100 + width)
    _same_bits(float32_sums.cascade_sum(flat, (0,)), float32_sums.row_sums(flat.reshape(1, -1), port=True)[0])
    if width < _SHORT:
        assert float32_sums._short_order(width) is None or len(float32_sums._short_order(width)) == width


@pytest.mark.parametrize("rows", [1, 3, 4, 5, 15, 16, 17, 32, _ROWS - 1, _ROWS, _ROWS + 1])
def test_short_outer_sums_are_the_cascade(rows, monkeypatch):
    """Sums down few rows (a bias gradient, ``x.sum(0)``) as the general ``_outer_sums`` adds them."""
    for columns in (1, 3, 4, 5, 8, 16, 31, 32, 33):
        x = _values((rows, columns), seed=rows * 100 + columns)
        short = float32_sums._outer_sums(x)
        with monkeypatch.context() as m:
            m.setattr(float32_sums, "_SHORT_SIZE", -1)  # the general path
            _same_bits(short, float32_sums._outer_sums(x))


def test_small_sums_skip_the_compiled_call(monkeypatch):
    """A sum of a few elements, short rows and few rows never reach the compiled library (its ctypes set-up
    was most of a tiny sum's cost)."""
    def refuse():
        raise AssertionError("the compiled sums were called")
    monkeypatch.setattr(float32_sums, "_native_library", refuse)
    float32_sums.cascade_sum(_values(8, 0), (0,))
    float32_sums.cascade_sum(_values((5, 3), 1), (1,))
    float32_sums.cascade_sum(_values((32, 16), 2), (0,))
    float32_sums.cascade_sum(_values((2, 2, 3), 3), (0, 1, 2))


def test_sums_and_means_against_torch():
    """sum() / mean() / sum(-1) / sum(0) of small float32 tensors: torch's bits (its sum adds in 8-float
    vectors on every CPU capability: float32_sums.SUM_LANES), across the boundaries."""
    torch = pytest.importorskip("torch")
    for n in [*range(1, 18), 31, 32, 33, 63, 64, 65]:
        x = _values(n, seed=n)
        t = ml.from_numpy(x)
        _same_bits(t.sum().numpy(), _torch_bits(torch, x, lambda v: v.sum()))
        _same_bits(t.mean().numpy(), _torch_bits(torch, x, lambda v: v.mean()))
    for shape in [(3, 7), (4, 15), (2, 16), (2, 17), (15, 5), (16, 33), (32, 16), (63, 1), (64, 3), (65, 8)]:
        x = _values(shape, seed=shape[0] * 7 + shape[1])
        t = ml.from_numpy(x)
        _same_bits(t.sum(-1).numpy(), _torch_bits(torch, x, lambda v: v.sum(-1)))
        _same_bits(t.sum(0).numpy(), _torch_bits(torch, x, lambda v: v.sum(0)))
        _same_bits(t.mean(0).numpy(), _torch_bits(torch, x, lambda v: v.mean(0)))


def test_specials_in_short_sums():
    """inf, -inf and NaN reach the sum in the cascade's order (inf + -inf is NaN wherever they meet)."""
    torch = pytest.importorskip("torch")
    for n in (3, 7, 8, 12, 15):
        for first, middle in [(np.inf, 1.0), (np.inf, -np.inf), (np.nan, 2.0), (-0.0, -0.0)]:
            x = _values(n, seed=n)
            x[0], x[n // 2] = first, middle
            if first == 0:
                x[:] = -0.0
            got = ml.from_numpy(x).sum().numpy()
            want = _torch_bits(torch, x, lambda v: v.sum())
            assert np.isnan(got) == np.isnan(want)
            if not np.isnan(want):
                _same_bits(got, want)


def _ties(n, scale, seed):
    """Products of a 12-bit and a 13-bit odd integer (25 bits: many on a float32 midpoint) plus a c far below
    their ulp, which decides the rounding: fmaf's result differs from the float64 sum rounded again."""
    rng = np.random.default_rng(seed)
    a = ((rng.integers(2 ** 11, 2 ** 12, n) | 1) * scale).astype(np.float32)
    b = (rng.integers(2 ** 12, 2 ** 13, n) | 1).astype(np.float32)
    c = (rng.standard_normal(n) * scale * 1e-9).astype(np.float32)
    return a, b, c


@needs_native
@pytest.mark.parametrize("scale", [1.0, 2.0 ** -140, 2.0 ** 100])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 2047, 2048, 2049])
def test_fused_multiply_add_as_fmaf_across_the_boundary(n, scale):
    """float32 a * b + c rounded once (the tanh backward's 1 - y*y, SGD's p - lr*g): the NumPy path below
    2048 elements and the compiled one from there give C's fmaf bits, ties of ties and subnormals included."""
    a, b, c = _ties(n, scale, seed=n)
    _same_bits(float32_math.fused_multiply_add(a, b, c), float32_math._fma_natively(a, b, c))


@needs_native
def test_one_tie_among_plain_elements_is_settled():
    """The cheap test must find a single tie (or a single subnormal sum) among ordinary elements, at any
    position; infinities and NaN around it stay as fmaf gives them."""
    rng = np.random.default_rng(3)
    for position in range(8):
        for scale in (1.0, 2.0 ** -140):
            a, b, c = (rng.standard_normal(8).astype(np.float32) for _ in range(3))
            ta, tb, tc = _ties(400, scale, seed=position)
            twice = np.add(np.multiply(ta, tb, dtype=np.float64), tc).astype(np.float32)
            tied = np.flatnonzero(twice != float32_math._fma_natively(ta, tb, tc))  # (2^-140: every sum subnormal)
            tied = tied[0] if scale == 1.0 else 0
            a[position], b[position], c[position] = ta[tied], tb[tied], tc[tied]
            a[(position + 3) % 8], b[(position + 5) % 8] = np.inf, np.nan
            _same_bits(float32_math._whole_array_fma(a, b, c), float32_math._fma_natively(a, b, c))
            for scalar_c in (np.float32(1), 1):
                _same_bits(float32_math._whole_array_fma(a, b, scalar_c), float32_math._fma_natively(a, b, scalar_c))


def test_tiny_chain_and_mlp_step_against_torch():
    """The micrograd chain in float32: torch's bits. An MLP's training steps (tanh, MSE, SGD): within 1e-5
    relative (the 16 -> 1 layer's matrix-vector product adds in BLAS's order, not torch's: 16 of its 32 outputs
    differ in the last bit from the first step, and that spreads; the rest of the step is torch's order)."""
    torch = pytest.importorskip("torch")
    results = []
    for lib in (ml, torch):
        lib.manual_seed(0)
        w = lib.randn(8, requires_grad=True)
        y = lib.randn(8)
        loss = (((y * w + w).tanh()) - 0.5).sum()
        loss.backward()
        x, target = lib.randn(32, 2), lib.randn(32, 1)
        model = lib.nn.Sequential(lib.nn.Linear(2, 16), lib.nn.Tanh(), lib.nn.Linear(16, 16), lib.nn.Tanh(),
                                  lib.nn.Linear(16, 1))
        opt = lib.optim.SGD(model.parameters(), lr=0.05)
        for _ in range(3):
            opt.zero_grad()
            mse = lib.nn.functional.mse_loss(model(x), target)
            mse.backward()
            opt.step()
        results.append([loss.detach().numpy(), w.grad.numpy(), mse.detach().numpy(),
                        *(p.detach().numpy() for p in model.parameters())])
    for mine, theirs in zip(results[0][:2], results[1][:2]):
        _same_bits(mine, theirs)
    for mine, theirs in zip(results[0][2:], results[1][2:]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape, dim, keepdim", [((8,), None, False), ((3, 4), 0, False), ((3, 4), -1, True),
                                                 ((2, 3, 4), (0, 2), False), ((2, 3, 4), (1,), True), ((), None, False),
                                                 ((0, 3), 0, False)])
def test_reduction_backward_as_torch(shape, dim, keepdim):
    """sum's and mean's backward hand the gradient back over the reduced axes (one reshape, and a whole sum's
    one element spread by a stride-0 view, ops/reduce.py _spread): torch's values, shape and a read-only
    view of the incoming gradient, as torch's expand."""
    torch = pytest.importorskip("torch")
    x = _values(shape, seed=len(shape))
    for name in ("sum", "mean"):
        grads = []
        for lib in (ml, torch):
            t = lib.tensor(x, requires_grad=True)
            out = getattr(t, name)() if dim is None else getattr(t, name)(dim, keepdim=keepdim)
            seed = lib.tensor(_values(tuple(out.shape), seed=3))
            out.backward(seed)
            grads.append(t.grad.numpy())
        _same_bits(*grads)
    g = np.array(2.0, np.float32)
    spread = ml.ops.reduce._spread(g, (3, 4))
    assert spread.shape == (3, 4) and spread.strides == (0, 0) and not spread.flags.writeable and (spread == 2).all()


def test_small_broadcasting_elementwise_against_torch():
    """Elementwise ops on a few elements with broadcasting (a row against a matrix, a column against a row, a
    number), forward and the gradients summed back over the broadcast axes: torch's bits."""
    torch = pytest.importorskip("torch")
    pairs = [((3, 4), (4,)), ((3, 1), (1, 4)), ((4,), ()), ((2, 3, 4), (3, 1)), ((7,), (7,))]
    for left, right in pairs:
        a, b = _values(left, seed=1), _values(right, seed=2)
        results = []
        for lib in (ml, torch):
            ta, tb = lib.tensor(a, requires_grad=True), lib.tensor(b, requires_grad=True)
            out = ((ta * tb + ta).tanh() - tb / 3).sum()
            out.backward()
            results.append([out.detach().numpy(), ta.grad.numpy(), tb.grad.numpy()])
        for mine, theirs in zip(*results):
            _same_bits(mine, theirs)
