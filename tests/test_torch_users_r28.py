"""Tutorial-style torch code in less-walked ops, against torch 2.13 bit for bit, round 28 (values, indices and the
gradients of ``sum(out * w)``), float32, float64 and the 16-bit floats.

What differed at the round's start: a 16-bit tensor to the power 0 at a signaling NaN (torch fills ones; float16's
tensor exponent widens, quieting it); 16-bit cumprod and logcumsumexp gradients (torch's formulas are 16-bit tensor
ops, each rounding, where minilora computed them in float32); unique's inverse of a 16-bit tensor with NaNs (numbered
in torch's unstable sort order); searchsorted / bucketize where a NaN or an unsorted row meets torch's binary search;
index_add's 16-bit sums (float32 on its scatter_add path, along the first or last of 2+ dims with alpha 1) and a
float32 / float64 alpha along such dims (a fused multiply-add per slice); scatter_reduce / index_reduce's 16-bit prod
gradients (torch's formula in 16-bit ops) and 16-bit mean (its sum rounded before it divides).
"""
import sys

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from users_ops_sweep import as_minilora as _as_minilora, as_torch as _as_torch  # noqa: E402  (the same bits)

SIXTEEN = ["bfloat16", "float16"]


def _torch_input(shape, dtype, seed=0, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(getattr(torch, dtype))


def _differing(theirs, mine):
    """How many elements differ (NaNs of any payload equal), or a word on the shape or dtype."""
    if theirs is None or mine is None:  # (an input the call does not use: no gradient on either side)
        return 0 if theirs is None and mine is None else "a gradient on one side only"
    mine = _as_torch(mine)
    if tuple(mine.shape) != tuple(theirs.shape) or mine.dtype != theirs.dtype:
        return f"{tuple(mine.shape)} {mine.dtype} vs {tuple(theirs.shape)} {theirs.dtype}"
    if not theirs.dtype.is_floating_point:
        return int((theirs != mine).sum())
    a, b = theirs.detach().double().numpy(), mine.double().numpy()
    return int((~((a.view(np.int64) == b.view(np.int64)) | (np.isnan(a) & np.isnan(b)))).sum())


def _assert_torchs(fn, *inputs, grad=False):
    """fn(lib, *inputs) in both libraries: every output equal, and with ``grad`` every input's gradient."""
    theirs_in = [t.detach().requires_grad_(grad and t.dtype.is_floating_point) for t in inputs]
    mine_in = [_as_minilora(t).requires_grad_(grad and t.dtype.is_floating_point) for t in inputs]
    theirs, mine = fn(torch, *theirs_in), fn(ml, *mine_in)
    theirs, mine = (list(v) if isinstance(v, tuple) else [v] for v in (theirs, mine))
    assert [_differing(t, m) for t, m in zip(theirs, mine)] == [0] * len(theirs)
    if grad:
        weight = torch.randn(theirs[0].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        weight = weight.to(theirs[0].dtype)
        (theirs[0] * weight).sum().backward()
        (mine[0] * _as_minilora(weight)).sum().backward()
        assert [_differing(t.grad, m.grad) for t, m in zip(theirs_in, mine_in) if t.requires_grad] == \
            [0] * sum(t.requires_grad for t in theirs_in)


# ---- pow at a signaling NaN -------------------------------------------------------------------------------------
def _signaling_nans(dtype):
    quiet, signaling = (0x7FC0, 0x7F81) if dtype == "bfloat16" else (0x7E00, 0x7C01)
    bits = np.array([signaling, signaling | 0x8000, quiet, 0, 0x3C00 if dtype == "float16" else 0x3F80], np.uint16)
    return torch.from_numpy(bits.view(np.int16).copy()).view(getattr(torch, dtype))


@pytest.mark.parametrize("dtype", SIXTEEN)
def test_16bit_power_zero_of_a_signaling_nan(dtype):
    # a number 0: torch fills ones (NumPy's pow(sNaN, 0) is NaN); float16 ** float16 tensor: torch widens float16 to
    # float32, which quiets the NaN, so 1 as C's pow(NaN, 0); bfloat16 widens bit for bit and stays NaN
    for call in (lambda L, x: x.pow(0), lambda L, x: x ** 0.0, lambda L, x: L.pow(x, L.zeros(5, dtype=x.dtype)),
                 lambda L, x: L.pow(x, L.tensor(0.0)), lambda L, x: L.pow(x, L.zeros(3, 1, dtype=x.dtype))):
        _assert_torchs(call, _signaling_nans(dtype))


# ---- cumprod and logcumsumexp gradients in 16 bits ---------------------------------------------------------------
@pytest.mark.parametrize("layout", ["rows", "strided columns", "transposed"])
def test_cumprod_gradient_as_torchs_16bit_ops(layout):
    # reversed_cumsum(out * grad) / input: three 16-bit tensor ops, each rounding (the cumsum's running sum in float32)
    calls = {"rows": lambda L, x: L.cumprod(x, 1), "strided columns": lambda L, x: x[:, ::2].cumprod(dim=0),
             "transposed": lambda L, x: L.cumprod(x.t(), -1)}
    for dtype in SIXTEEN + ["float32"]:
        _assert_torchs(calls[layout], _torch_input((16, 40), dtype, seed=3, scale=1.2), grad=True)


def test_cumprod_gradient_with_zeros_as_torchs_16bit_ops():
    # torch's masked formula (zeros in the rows): its cumprod, product and sum are 16-bit tensors too
    for dtype in SIXTEEN + ["float32", "float64"]:
        x = _torch_input((16, 40), dtype, seed=4, scale=1.2)
        _assert_torchs(lambda L, x: L.cumprod(L.where(x.abs() < 0.2, 0.0, x), 1), x, grad=True)


@pytest.mark.parametrize("dtype", SIXTEEN)
@pytest.mark.parametrize("dim", [0, 1])
def test_logcumsumexp_gradient_as_torchs_16bit_ops(dtype, dim):
    # log|g|, where, - out, the reversed scan (float32 running value), + input, exp, pos - neg: each 16-bit
    x = _torch_input((40, 30), dtype, seed=5, scale=4)
    _assert_torchs(lambda L, x: L.logcumsumexp(x, dim), x, grad=True)


@pytest.mark.parametrize("dtype", SIXTEEN)
def test_logcumsumexp_gradient_with_infinities(dtype):
    x = _torch_input((3, 20), dtype)
    _assert_torchs(lambda L, x: L.logcumsumexp(L.where(x > 1, float("inf"), L.where(x < -1, float("-inf"), x)), 1),
                   x, grad=True)


# ---- unique with NaNs ---------------------------------------------------------------------------------------------
def test_unique_numbers_nans_in_torchs_sort_order():
    # every NaN is a value of its own; torch numbers them as its unstable sort leaves them (NumPy's sort: another
    # order for 16-bit tensors)
    for dtype in SIXTEEN + ["float32", "float64"]:
        for seed in range(20):
            generator = torch.Generator().manual_seed(seed)
            x = torch.randint(-5, 5, (int(torch.randint(1, 300, (1,), generator=generator)),), generator=generator)
            x = x.to(getattr(torch, dtype))
            x[torch.rand(x.numel(), generator=generator) < 0.3] = float("nan")
            _assert_torchs(lambda L, x: L.unique(x, return_inverse=True, return_counts=True), x)


# ---- searchsorted / bucketize: torch's binary search ----------------------------------------------------------------
@pytest.mark.parametrize("side", ["left", "right"])
def test_searchsorted_nan_values_and_rows_as_torchs_binary_search(side):
    # torch goes right unless row[mid] >= v (> for side='right'): a NaN compares false, so a NaN value lands at the
    # end and a NaN in the row sends values past it; NumPy orders NaN last
    nan = float("nan")
    rows = torch.tensor([[-2.0, 0.0, 1.0, nan], [nan, -2.0, -1.0, 2.0], [0.0, nan, 1.0, 3.0]])
    values = torch.tensor([[nan, 2.0, -3.0, 1.0], [0.5, nan, 3.0, -2.0], [1.0, 2.0, nan, -1.0]])
    _assert_torchs(lambda L, s, v: L.searchsorted(s, v, side=side), rows, values)
    _assert_torchs(lambda L, s, v: L.searchsorted(s[0], v[0], right=side == "right", out_int32=True), rows, values)
    _assert_torchs(lambda L, b, v: L.bucketize(v, b[2], right=side == "right"), rows, values)


def test_searchsorted_unsorted_rows_and_mixed_dtypes_as_torch():
    generator = torch.Generator().manual_seed(0)
    row = torch.randint(-5, 5, (17,), generator=generator)  # (unsorted: torch's halving decides, as NumPy's need not)
    values = torch.randint(-6, 6, (9,), generator=generator)
    for r, v in ((row, values), (row.double(), values.float() + 0.5), (row.to(torch.bfloat16), values.float() - 0.5),
                 (row.float(), values)):
        _assert_torchs(lambda L, s, x: L.searchsorted(s, x), r, v)
        _assert_torchs(lambda L, s, x: L.searchsorted(s, x, side="right"), r, v)


# ---- index_add ----------------------------------------------------------------------------------------------------
def _positions(lib, dtype="int64"):
    return lib.tensor([i % 3 for i in range(200)], dtype=getattr(lib, dtype))


@pytest.mark.parametrize("dtype", SIXTEEN + ["float32"])
def test_index_add_sums_as_torch(dtype):
    # 16 bits: torch's scatter_add path (alpha 1, int64 index, the first or last of 2+ dims) sums in float32 and rounds
    # once, else slice by slice in 16 bits; float32 with an alpha along such dims: fma(alpha, source, self) per slice
    forms = [((3,), (200,), 0, "int64"), ((3, 5), (200, 5), 0, "int64"), ((3, 5), (200, 5), 0, "int32"),
             ((5, 3), (5, 200), 1, "int64"), ((2, 3, 4), (2, 200, 4), 1, "int64"), ((2, 4, 3), (2, 4, 200), -1, "int64")]
    for self_shape, source_shape, dim, index_dtype in forms:
        x, source = _torch_input(self_shape, dtype, seed=1), _torch_input(source_shape, dtype, seed=2)
        for alpha in (1, 0.3):
            _assert_torchs(lambda L, x, s: L.index_add(x, dim, _positions(L, index_dtype), s, alpha=alpha), x, source)
            _assert_torchs(lambda L, x, s: x.t().clone().t().index_add_(dim, _positions(L, index_dtype), s, alpha=alpha)
                           if x.ndim == 2 else x.clone().index_add_(dim, _positions(L, index_dtype), s, alpha=alpha),
                           x, source)


@pytest.mark.parametrize("dtype", SIXTEEN)
def test_index_add_source_gradient_times_alpha_in_float32(dtype):
    # grad.index_select(...) * alpha: torch multiplies a 16-bit tensor by the float alpha in float32 (NumPy's 16-bit
    # ufunc would round alpha to 16 bits first)
    _assert_torchs(lambda L, x, s: x.index_add(0, _positions(L), s, alpha=0.3),
                   _torch_input((3, 5), dtype, seed=1), _torch_input((200, 5), dtype, seed=2), grad=True)


# ---- scatter_reduce / index_reduce in 16 bits ------------------------------------------------------------------------
def _with_zeros(shape, dtype, seed):
    x = _torch_input(shape, "float64", seed=seed)
    x[x.abs() < 0.25] = 0
    return x.to(getattr(torch, dtype))


@pytest.mark.filterwarnings("ignore:index_reduce:UserWarning")
@pytest.mark.parametrize("dtype", SIXTEEN)
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_and_index_reduce_prod_gradients_as_torchs_16bit_ops(dtype, include_self):
    # torch's formula: grad * (the reduction again) / self, (grad * result).gather / src, ...: each a 16-bit tensor
    for seed in range(3):
        index = torch.randint(0, 6, (40,), generator=torch.Generator().manual_seed(seed + 10))
        _assert_torchs(lambda L, x, s: L.scatter_reduce(x, 0, _as_minilora(index) if L is ml else index, s, "prod",
                                                        include_self=include_self),
                       _with_zeros((6,), dtype, seed), _with_zeros((40,), dtype, seed + 1), grad=True)
        _assert_torchs(lambda L, x, s: x.index_reduce(0, _as_minilora(index) if L is ml else index, s, "prod",
                                                      include_self=include_self),
                       _with_zeros((6, 3), dtype, seed), _with_zeros((40, 3), dtype, seed + 1), grad=True)


@pytest.mark.parametrize("dtype", SIXTEEN)
def test_scatter_reduce_mean_rounds_the_16bit_sum_before_dividing(dtype):
    # torch sums in float32 into the 16-bit result, then divides it by the counts: two roundings
    for seed in range(3):
        index = torch.randint(0, 6, (40,), generator=torch.Generator().manual_seed(seed + 10))
        for include_self in (True, False):
            _assert_torchs(lambda L, x, s: L.scatter_reduce(x, 0, _as_minilora(index) if L is ml else index, s, "mean",
                                                            include_self=include_self),
                           _torch_input((6,), dtype, seed), _torch_input((40,), dtype, seed + 1), grad=True)


# ---- interpolate and adaptive average pooling in 16 bits ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", SIXTEEN)
@pytest.mark.parametrize("mode", ["linear", "trilinear", "bicubic"])
def test_16bit_interpolate_blends_with_16bit_weights(dtype, mode):
    # torch's generic upsample kernel stores a 16-bit input's weights in its dtype: lambda1 rounded, lambda0 = 1 -
    # lambda1 in 16 bits (Keys' cubic weights rounded), then blends in float32
    shape = {"linear": (2, 3, 9), "trilinear": (1, 2, 3, 4, 5), "bicubic": (2, 3, 5, 7)}[mode]
    size = {"linear": 14, "trilinear": (4, 5, 7), "bicubic": (8, 11)}[mode]
    x = _torch_input(shape, dtype)
    for align_corners in (False, True):
        _assert_torchs(lambda L, x: L.nn.functional.interpolate(x, size=size, mode=mode, align_corners=align_corners),
                       x, grad=True)
        _assert_torchs(lambda L, x: L.nn.functional.interpolate(x, scale_factor=0.7, mode=mode,
                                                                align_corners=align_corners), x, grad=True)


@pytest.mark.parametrize("dtype", SIXTEEN)
def test_16bit_adaptive_avg_pool3d_sums_in_16_bits(dtype):
    # torch's adaptive_avg_pool3d_out_frame adds a cell's elements in scalar_t (each sum rounded), then divides by
    # depth, height and width (interpolate's 'area' of a volume is the same kernel)
    for shape, size in (((1, 2, 3, 4, 5), (4, 5, 7)), ((2, 3, 7, 6, 9), (3, 2, 4))):
        x = _torch_input(shape, dtype)
        _assert_torchs(lambda L, x: L.nn.functional.adaptive_avg_pool3d(x, size), x, grad=True)
        _assert_torchs(lambda L, x: L.nn.functional.interpolate(x, size=size, mode="area"), x, grad=True)


# ---- cdist by matrix products, pdist's dtypes ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", SIXTEEN + ["float32", "float64"])
def test_cdist_by_matrix_products_as_torchs_euclidean_dist(dtype):
    # p = 2 with more than 25 rows (or use_mm_for_euclid_dist): [-2 x1, |x1|^2, 1] @ [x2, 1, |x2|^2]^T clamped and
    # rooted, and _euclidean_dist_backward -- minilora took the rows' differences' norms
    cases = [(lambda L, a, b: L.cdist(a, b), (30, 5), (26, 5)),
             (lambda L, a, b: L.cdist(a, b, compute_mode="use_mm_for_euclid_dist"), (2, 1, 6, 5), (3, 4, 5)),
             (lambda L, a, b: L.cdist(a, a + 1e-3), (30, 8), (1, 8))]
    for call, shape1, shape2 in cases:
        _assert_torchs(call, _torch_input(shape1, dtype), _torch_input(shape2, dtype, seed=1), grad=True)


@pytest.mark.parametrize("dtype", SIXTEEN)
def test_pdist_refuses_16bit_rows_as_torch(dtype):
    with pytest.raises(NotImplementedError, match="not implemented for"):
        ml.pdist(_as_minilora(_torch_input((3, 2), dtype)))
    _assert_torchs(lambda L, x: L.pdist(x), _torch_input((1, 3), dtype))  # (one row: no pair, no kernel)


# ---- reflection / replication padding's 16-bit gradient --------------------------------------------------------------
@pytest.mark.parametrize("dtype", SIXTEEN)
@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_16bit_pad_gradient_adds_in_16_bits(dtype, mode):
    # torch's padding backward adds each output's gradient into the element it read, in scalar_t (each sum rounded)
    for shape, widths in (((2, 3, 9), (5, 7)), ((2, 3, 6, 7), (-1, 3, 2, -1)), ((2, 2, 4, 5, 6), (2, 3, 1, 2, 2, 1))):
        _assert_torchs(lambda L, x: L.nn.functional.pad(x, widths, mode=mode), _torch_input(shape, dtype), grad=True)


# ---- addcmul / addcdiv gradients in 16 bits ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", SIXTEEN)
@pytest.mark.parametrize("op", ["addcmul", "addcdiv"])
def test_16bit_addcmul_addcdiv_gradients_as_torchs_16bit_ops(dtype, op):
    # g * (tensor2 * value); addcdiv: g * (value / tensor2) (value filled into a 16-bit tensor first) and
    # -g * ((tensor1 * value) / (tensor2 * tensor2)): each op rounds, then the broadcast sums
    for value in (0.3, -2, 7.7, 1):
        for shapes in (((4, 5), (4, 5), (4, 5)), ((1, 5), (4, 5), (4, 1)), ((4, 1), (1, 5), (4, 5))):
            inputs = [_torch_input(shape, dtype, seed=i) for i, shape in enumerate(shapes)]
            _assert_torchs(lambda L, a, b, c: getattr(L, op)(a, b, c, value=value), *inputs, grad=True)


# ---- float64 prod ------------------------------------------------------------------------------------------------
def test_float64_prod_in_torchs_vector_order():
    # binary_kernel_reduce_vec: four running vectors of 4 doubles over blocks of 16, (a0 a1)(a2 a3), lanes left to
    # right, then the tail -- NumPy's product is another order (all of a row's bits differed past 16 elements)
    for n in (3, 16, 17, 20, 47, 100, 257):
        x = _torch_input((3, n), "float64", scale=1.1)
        _assert_torchs(lambda L, x: L.prod(x, 1), x, grad=True)
        _assert_torchs(lambda L, x: x.t().prod(0), x, grad=True)
        _assert_torchs(lambda L, x: x[0].prod(), x, grad=True)


# ---- var / std gradients in 16 bits ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", SIXTEEN)
def test_16bit_var_std_gradients_as_torchs_16bit_ops(dtype):
    # var_backward: (2 / dof) * grad * (self - self.mean(dim, keepdim=True)), each op a 16-bit tensor; std's first
    # divides grad by (result * 2), the saved 16-bit result
    x = _torch_input((4, 50), dtype)
    for call in (lambda L, x: L.var(x, 1), lambda L, x: x.std(1), lambda L, x: x.var(),
                 lambda L, x: L.std(x.t(), 0, correction=0, keepdim=True), lambda L, x: L.var_mean(x, 1)[0],
                 lambda L, x: L.std_mean(x, 1)[0]):
        _assert_torchs(call, x, grad=True)


# ---- grid_sample's 16-bit points outside ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", SIXTEEN)
def test_16bit_grid_sample_outside_reads_positive_zero(dtype):
    # torch's 16-bit grid sampler starts each output from +0 and adds the corners inside: a point outside is +0
    # (minilora multiplied a masked read, -0 from a negative weight or value)
    for shape, grid_shape in (((2, 3, 5, 7), (2, 4, 6, 2)), ((1, 2, 3, 4, 5), (1, 2, 3, 4, 3))):
        x, grid = _torch_input(shape, dtype), _torch_input(grid_shape, dtype, seed=5, scale=2.5)
        for align_corners in (False, True):
            _assert_torchs(lambda L, x, g: L.nn.functional.grid_sample(x, g, align_corners=align_corners), x, grid)


# ---- embedding_bag's per_sample_weights gradient -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_embedding_bag_per_sample_weights_gradient_in_mkls_dot_order(dtype):
    # torch's _embedding_bag_per_sample_weights_backward: each sample's BLAS dot of its bag's gradient and its row
    for width in (4, 37, 130):
        weight, samples = _torch_input((5, width), dtype), _torch_input((8,), dtype, seed=2)
        _assert_torchs(lambda L, w, p: L.nn.functional.embedding_bag(
            L.tensor([0, 2, 1, 2, 4, 0, 3, 3]), w, L.tensor([0, 3, 3, 5]), mode="sum", per_sample_weights=p),
            weight, samples, grad=True)


def test_reflection_and_replication_padding_refuse_bools_as_torch():
    # torch's kernels have no bool version (after the sizes' checks); minilora's gather padded them
    for mode, kernel in (("reflect", "reflection_pad"), ("replicate", "replication_pad")):
        for shape, widths in (((1, 2, 4), (1, 1)), ((1, 2, 4, 4), (1, 1, 1, 1)), ((1, 1, 2, 4, 4), (1,) * 6)):
            with pytest.raises(NotImplementedError, match=f'"{kernel}{len(widths) // 2}d" not implemented for'):
                ml.nn.functional.pad(ml.zeros(shape, dtype=ml.bool), widths, mode=mode)
    assert ml.nn.functional.pad(ml.ones(1, 2, dtype=ml.bool), (1, 1), mode="circular").tolist() == [[True] * 4]


# ---- index_select's and repeat_interleave's gradients ------------------------------------------------------------
@pytest.mark.parametrize("dtype", SIXTEEN + ["float32"])
def test_index_select_and_repeat_interleave_gradients_as_torch(dtype):
    # index_select's backward is zeros().index_add_(...): 16-bit sums in float32 along the first or last of 2+ dims;
    # repeat_interleave by a Python int is torch's unsqueeze-expand-copy (its gradient a sum over the copies)
    positions = [i % 3 for i in range(200)]
    calls = [(lambda L, x: x.index_select(0, L.tensor(positions)), (3, 5)),
             (lambda L, x: x.index_select(1, L.tensor(positions)), (5, 3)),
             (lambda L, x: L.repeat_interleave(x, L.tensor([1, 0, 3, 2]), dim=0), (4, 5)),
             (lambda L, x: x.repeat_interleave(7, dim=1), (4, 5)), (lambda L, x: x.repeat_interleave(30), (4, 5)),
             (lambda L, x: x.t().repeat_interleave(3, dim=0), (4, 5))]
    for call, shape in calls:
        _assert_torchs(call, _torch_input(shape, dtype), grad=True)
    x = ml.randn(4, 5, requires_grad=True)
    assert type(x.repeat_interleave(3, dim=1).grad_fn).__name__ == "ViewBackward0"  # (torch's: the copy's view)
