"""Round 15: float64 sums in torch's order, and every layout of a sum as torch's iterator runs it.

torch's CPU ``sum`` runs ATen's cascade_sum for float64 as for float32, with 4 doubles a vector (the sum
kernel's AVX2 build; "default"'s generic vector is 32 bytes too: measured the same under
ATEN_CPU_CAPABILITY=avx512/avx2/default). minilora summed float64 pairwise (NumPy's order): a float64 loss
printed with 17 digits differed from torch's in its last bits. ``float32_sums`` now runs the cascade for both
dtypes (compiled: ``ml_row_sums_f64``), and views and middle dimensions (``x.sum(1)`` of a 3-D tensor,
``x.T``, ``x[::2]``, ``x[..., ::3]``, dims of size 1) go through a model of torch's TensorIterator
(``_iterator_sum``: its dimension order, coalescing and 2-D loop), for float32 too (before: NumPy's sum
for 303 of 1140 layouts probed). nll_loss / cross_entropy (float64) add their rows in torch's cascade, as
does a float64 linear layer's bias gradient.
"""
import numpy as np
import pytest

import minilora as ml
from minilora import float32_sums

torch = pytest.importorskip("torch")


def _values(shape, dtype=np.float64, seed=0):
    """Magnitudes over 40 binades: the order of additions shows in the last bits."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * np.exp2(rng.uniform(-20, 20, shape))).astype(dtype)


def _same_bits(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert np.array_equal(ours.reshape(-1).view(np.uint8), theirs.reshape(-1).view(np.uint8)), \
        np.max(np.abs(ours.astype(np.float64) - theirs))


_VIEWS = {"contiguous": lambda t: t, "transposed": lambda t: t.transpose(0, -1), "rows stepped": lambda t: t[::2],
          "last stepped": lambda t: t[..., ::3]}
# (shape, dims): whole tensors across the vector and thread boundaries, leading / trailing / middle dims
_CASES = [((1000,), None), ((70000,), None), ((7,), 0), ((9,), None), ((64, 17), 1), ((200, 31), (0, 1))]
# the layouts float32 summed in NumPy's order too (a dim of size 1, middle dims, views of these)
_NEW_LAYOUTS = [((100, 1), 0), ((64, 17), 0), ((4, 70, 5), 1), ((17, 3, 9), (0, 2)), ((6, 100, 1), 1),
                ((300, 250), 0), ((64, 40, 30), (0, 2)), ((3, 2, 5, 6), (1, 3))]


@pytest.mark.parametrize("shape, dims, dtype", [case + (np.float64,) for case in _CASES + _NEW_LAYOUTS]
                         + [case + (np.float32,) for case in _NEW_LAYOUTS])
def test_sum_mean_nansum_are_torchs_bits(shape, dims, dtype, two_threads):
    """sum, sum(keepdim=True), mean and nansum of each layout: torch's bits (float64: before, NumPy's pairwise
    order in nearly every case; float32: views and middle dims were NumPy's)."""
    x = _values(shape, dtype, seed=len(shape) * 7 + shape[0])
    x.reshape(-1)[::11] = -0.0
    for name, view in _VIEWS.items():
        if len(shape) == 1 and name != "contiguous":
            continue
        for fn in (lambda t: t.sum() if dims is None else t.sum(dims),
                   lambda t: t.sum(dims if dims is not None else 0, keepdim=True),
                   lambda t: t.mean() if dims is None else t.mean(dims)):
            _same_bits(fn(view(ml.tensor(x))).numpy(), fn(view(torch.from_numpy(x))).numpy())
    with_nan = x.copy()
    with_nan.reshape(-1)[::5] = np.nan
    _same_bits(ml.nansum(ml.tensor(with_nan)).numpy(), torch.nansum(torch.from_numpy(with_nan)).numpy())


@pytest.mark.parametrize("width", [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 100, 1027])
def test_compiled_float64_row_sums_are_the_port(width):
    """``ml_row_sums_f64`` (C) adds as the NumPy port of the cascade (4 lanes), the short forms too."""
    x = _values((3, width), seed=width)
    _same_bits(float32_sums.row_sums(x), float32_sums.row_sums(x, port=True))
    _same_bits(float32_sums.row_sums(x), torch.from_numpy(x).sum(1).numpy())
    assert float32_sums.sum_lanes(x.dtype) == 4 and float32_sums.sum_lanes(np.dtype(np.float32)) == 8


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_outer_sums_are_the_port(dtype, monkeypatch):
    """``ml_outer_sums`` (C: every whole group of columns in one pass down the rows, strided slabs) adds as the
    NumPy port: 4 vectors' lanes side by side or 4 columns (scalar_outer_sum), each other column on its own."""
    x = _values((3, 300, 70), dtype, seed=11)[:, ::2, 3:]
    for group in (4, 4 * float32_sums.sum_lanes(x.dtype)):
        compiled = float32_sums._slab_outer_sums(x, group)
        monkeypatch.setattr(float32_sums, "_native_library", lambda: None)
        _same_bits(compiled, float32_sums._slab_outer_sums(x, group))
        monkeypatch.undo()


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_and_nll_loss_add_rows_as_torch(weighted):
    """nll_loss's cascade of partial sums (8 levels of 16 rows) in float64 as in float32: cross_entropy's 'mean'
    and 'sum', and F.nll_loss (which summed pairwise in both dtypes)."""
    logits, target = _values((300, 5), seed=3) / 1e5, np.random.default_rng(4).integers(0, 5, 300)
    target[::7] = -100
    weight = _values(5, seed=5) ** 2 if weighted else None
    for dtype in (np.float64, np.float32):
        for reduction in ("mean", "sum"):
            kwargs = {"reduction": reduction, "ignore_index": -100}
            ours_w, theirs_w = [None if weight is None else m.tensor(weight.astype(dtype)) for m in (ml, torch)]
            ours = ml.nn.functional.cross_entropy(ml.tensor(logits.astype(dtype)), ml.tensor(target),
                                                  weight=ours_w, **kwargs)
            theirs = torch.nn.functional.cross_entropy(torch.tensor(logits.astype(dtype)), torch.tensor(target),
                                                       weight=theirs_w, **kwargs)
            _same_bits(ours.numpy(), theirs.numpy())
            ours = ml.nn.functional.nll_loss(ml.tensor(logits.astype(dtype)), ml.tensor(target), weight=ours_w,
                                             **kwargs)
            theirs = torch.nn.functional.nll_loss(torch.tensor(logits.astype(dtype)), torch.tensor(target),
                                                  weight=theirs_w, **kwargs)
            _same_bits(ours.numpy(), theirs.numpy())


def test_float64_linear_bias_gradient_is_torchs():
    """A float64 linear layer's bias gradient: dY.sum(0) in the cascade's order (it was NumPy's)."""
    x, w, b, g = _values((200, 7), seed=6), _values((9, 7), seed=7), _values(9, seed=8), _values((200, 9), seed=9)
    grads = []
    for m in (ml, torch):
        bias = m.tensor(b, requires_grad=True)
        m.nn.functional.linear(m.tensor(x), m.tensor(w), bias).backward(m.tensor(g))
        grads.append(bias.grad.numpy())
    _same_bits(*grads)


def test_whole_tensor_var_and_std_are_torchs(two_threads):
    """float64 var/std of a whole tensor as torch's std_var_all_cpu: its cascade mean, then (x - mean)**2 added
    in order, one chunk a thread (minilora's NumPy mean and pairwise sum differed in 20 of 64 probes; float32 goes
    the same way, its rounding to float32 hiding most of the difference)."""
    for shape in [(1000,), (70000,), (30, 40)]:
        x = _values(shape, seed=shape[0]) / 1e4 + 1e3
        for correction in (0, 1):
            for name in ("var", "std"):
                ours = getattr(ml.tensor(x), name)(correction=correction)
                theirs = getattr(torch.from_numpy(x), name)(correction=correction)
                _same_bits(ours.numpy(), theirs.numpy())


def test_float64_two_norms_are_torchs():
    """norm / linalg.vector_norm (p=2) along the last dim or of a whole contiguous tensor: float64 squares added in
    4 lanes, then the lanes, then the tail (torch's vectorized norm kernel; minilora's NumPy sum differed)."""
    for shape in [(3, 5), (4, 37), (2, 1000), (1, 7), (5, 4), (3, 9), (40,)]:
        x = _values(shape, seed=sum(shape))
        for norm in (lambda m, t: m.linalg.vector_norm(t, dim=-1), lambda m, t: t.norm(dim=-1),
                     lambda m, t: t.norm(), lambda m, t: m.linalg.vector_norm(t)):
            _same_bits(norm(ml, ml.tensor(x)).numpy(), norm(torch, torch.from_numpy(x)).numpy())
