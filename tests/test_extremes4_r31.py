"""Round 31: the extremes leftovers -- grid_sample at NaN / inf / huge grid coordinates (torch 2.13's kernels: the
2-D vectorized one clamps a NaN to pixel 0, the 3-D scalar one's forward to size - 1 while its backward keeps it
NaN), adaptive pooling to an empty output, reflect padding to an empty one.

Measured and left (torch 2.13.0+cpu): the 2-D bilinear backward with 'border' and a NaN coordinate, or
'reflection' and a non-finite one (an infinite float32 one after unnormalizing too), segfaults in torch (its
``clip_coordinates_get_grad`` keeps the NaN, its int conversion gives INT_MIN, its 'border'/'reflection' masks read
every corner as inside); minilora answers with the forward's clamp (gradient 0 there). 2-D bicubic matches torch's
specials (NaN / inf / finite) but not its last bits (the vectorized kernel's contractions, not modelled), and 16-bit
grid_sample differs at ordinary coordinates (torch's 16-bit kernels, not modelled). torch's 3-D reflection pad of
an empty output and circular pad with a negative amount answer uninitialised memory: minilora answers zeros / refuses.
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import minilora as ml  # noqa: E402


def differing(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    return int(((ours != theirs) & ~(np.isnan(ours) & np.isnan(theirs))).sum())


def kind(a):
    """0 finite, 1 +-inf (by sign: 0 / 2), 3 NaN"""
    return np.where(np.isnan(a), 3, np.where(np.isinf(a), np.sign(a) + 1, 0))


# ---- grid_sample ---------------------------------------------------------------------------------------------------
EXTREME_COORDINATES = [np.nan, np.inf, -np.inf, 1e30, -1e30, 3e9, -3e9, 3.4e38]


def torch_crashes(rank, mode, padding_mode, dtype, value):
    """torch's 2-D bilinear backward at a NaN pixel coordinate (see the module's note): not asked"""
    if dtype == "float32" and abs(value) > 1e37:
        value = np.inf  # (unnormalized: past float32's range)
    return rank == 2 and mode == "bilinear" and padding_mode != "zeros" and not np.isfinite(value)


def grid_samples(rank, mode, padding_mode, align_corners, dtype, value, backward=True, spatial=None):
    """(ours, torch's) [out, input's gradient, grid's gradient] with a quarter of the grid's numbers ``value``"""
    rng = np.random.default_rng(0)
    spatial = spatial or ((3, 4) if rank == 2 else (3, 4, 5))
    out_spatial = (4, 6) if rank == 2 else (2, 3, 5)
    x = rng.standard_normal((2, 3) + tuple(spatial)).astype(dtype)
    grid = rng.uniform(-1.2, 1.2, (2,) + out_spatial + (rank,)).astype(dtype)
    with np.errstate(over="ignore"):
        grid.reshape(-1)[rng.choice(grid.size, grid.size // 4, replace=False)] = value
    g = rng.standard_normal((2, 3) + out_spatial).astype(dtype)
    results = []
    for library in (ml, torch):
        xt, gt = library.tensor(x, requires_grad=True), library.tensor(grid, requires_grad=True)
        out = library.nn.functional.grid_sample(xt, gt, mode=mode, padding_mode=padding_mode,
                                                align_corners=align_corners)
        result = [out.detach().numpy()]
        if backward:
            out.backward(library.tensor(g))
            result += [xt.grad.numpy(), gt.grad.numpy()]
        results.append(result)
    return results


@pytest.mark.parametrize("rank,mode", [(2, "bilinear"), (2, "nearest"), (3, "bilinear"), (3, "nearest")])
@pytest.mark.parametrize("padding_mode", ["border", "reflection"])  # ('zeros' was torch's: checked below)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_grid_sample_at_extreme_coordinates_is_torchs(rank, mode, padding_mode, dtype):
    """2-D: a NaN clamped to pixel 0 ('border'; 'reflection' mirrors NaN and +-inf to NaN first); 3-D: the forward
    reads the last pixel for a NaN, the backward none; a mirrored 1e30 as torch's fmod (the gradient's
    ``coord * sign + offset`` had cancelled it to 0), flips past int's range even (torch's int cast: INT_MIN)"""
    for align_corners in (False, True):
        for value in EXTREME_COORDINATES:
            backward = not torch_crashes(rank, mode, padding_mode, dtype, value)
            ours, theirs = grid_samples(rank, mode, padding_mode, align_corners, dtype, value, backward)
            for a, t in zip(ours, theirs):
                assert differing(a, t) == 0, (align_corners, value)


@pytest.mark.parametrize("rank,mode", [(2, "bilinear"), (2, "nearest"), (3, "bilinear"), (3, "nearest")])
@pytest.mark.parametrize("spatial", [(1, 1, 1), (2, 1, 1)])
def test_grid_sample_of_one_pixel_wide_inputs_at_extreme_coordinates_is_torchs(rank, mode, spatial):
    """a dimension of size 1: nothing to mirror into with align_corners (every coordinate 0, none lost)"""
    for padding_mode in ("zeros", "border", "reflection"):
        for align_corners in (False, True):
            for value in (np.nan, np.inf, 1e30):
                backward = not torch_crashes(rank, mode, padding_mode, "float64", value)
                ours, theirs = grid_samples(rank, mode, padding_mode, align_corners, "float64", value, backward,
                                            spatial[:rank])
                for a, t in zip(ours, theirs):
                    assert differing(a, t) == 0, (padding_mode, align_corners, value)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_bicubic_grid_sample_at_extreme_coordinates_has_torchs_specials(padding_mode):
    """the taps of a NaN point clamped to pixel 0 ('border', 'reflection': its NaN gradient lands there), an
    outside point's NaN weight kept from the pixel it stands in for ('zeros': where, not times 0)"""
    for align_corners in (False, True):
        for value in EXTREME_COORDINATES:
            with np.errstate(invalid="ignore", over="ignore"):
                ours, theirs = grid_samples(2, "bicubic", padding_mode, align_corners, "float64", value)
            for a, t in zip(ours, theirs):
                assert (kind(a) == kind(t)).all(), value
                finite = np.isfinite(a)
                np.testing.assert_allclose(a[finite], t[finite], rtol=1e-9, atol=1e-12)


# ---- adaptive pooling and interpolate(mode='area') to an empty output ----------------------------------------------
EMPTY_POOLINGS = [("adaptive_avg_pool1d", (2, 3, 5), 0), ("adaptive_max_pool1d", (3, 5), 0),
                  ("adaptive_avg_pool2d", (2, 3, 5, 4), (0, 2)), ("adaptive_max_pool2d", (2, 3, 5, 4), (2, 0)),
                  ("adaptive_avg_pool3d", (2, 3, 5, 4, 3), (1, 1, 0)),
                  ("adaptive_max_pool3d", (2, 3, 5, 4, 3), (0, 1, 1))]


@pytest.mark.parametrize("name,shape,output_size", EMPTY_POOLINGS)
def test_adaptive_pooling_to_an_empty_output_answers_and_its_backward_refuses(name, shape, output_size):
    """torch computes the empty output (adaptive_max_pool3d's crashed in minilora) and refuses its backward"""
    messages = []
    for library in (ml, torch):
        x = library.ones(shape, requires_grad=True)
        out = getattr(library.nn.functional, name)(x, output_size)
        assert out.numel() == 0
        if "max" in name:
            assert getattr(library.nn.functional, name)(x, output_size, return_indices=True)[1].shape == out.shape
        with pytest.raises(RuntimeError) as error:
            out.sum().backward()
        messages.append((tuple(out.shape), type(out.grad_fn).__name__, str(error.value)))
    assert messages[0] == messages[1]


def test_area_interpolation_to_nothing_is_torchs():
    results = []
    for library in (ml, torch):
        x = library.ones((2, 3, 5), requires_grad=True)
        out = library.nn.functional.interpolate(x, scale_factor=1e-30, mode="area")
        with pytest.raises(RuntimeError, match="non-zero size for non-batch dimensions") as error:
            out.sum().backward()
        results.append((tuple(out.shape), str(error.value)))
    assert results[0] == results[1]


# ---- reflect padding to an empty output ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape,pad", [((1, 1, 1, 1), (0, -1, 0, -1)), ((2, 3, 2, 2), (-2, -1, -2, -1)),
                                       ((1, 1, 1, 1, 1), (0, -1, 0, -1, 0, -1)),
                                       ((2, 3, 2, 2, 2), (-2, -1, -2, -1, -2, -1))])
def test_reflect_padding_to_an_empty_output_is_refused_as_torch(shape, pad):
    """torch's reflection kernels refuse an output empty in every padded dimension, as its replication ones"""
    messages = []
    for library in (ml, torch):
        with pytest.raises(RuntimeError, match="is too small") as error:
            library.nn.functional.pad(library.ones(shape), pad, mode="reflect")
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    x = np.arange(12.0).reshape(1, 2, 3, 2)  # (one padded dimension empty: answered)
    ours, theirs = (library.nn.functional.pad(library.tensor(x), (0, -2, 0, 0), mode="reflect").shape
                    for library in (ml, torch))
    assert tuple(ours) == tuple(theirs) == (1, 2, 3, 0)


# ---- training batch norm of two rows: one thread adds both (measured) -----------------------------------------
@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("channels", [1, 8, 16])
def test_batch_statistics_of_two_rows_are_torchs(dtype, channels):
    """[2, C] (BatchNorm1d of a batch of 2; BatchNorm2d of [2, C, 1, 1]): torch 2.13 on 2 threads adds the two rows'
    squares in one buffer (a fused multiply-add onto the first row's square) up to 16 channels, in two (added in
    double) from 17 on and for 3 rows or more; the variance, invstd and running variance an ulp off before"""
    rng = np.random.default_rng(channels)
    for trial in range(60):
        width = channels if trial % 4 else 17  # (the boundary: 17 channels split)
        shape = (2, width) if rng.random() < 0.7 else (2, width, 1)
        x = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4)).astype(dtype)
        results = []
        for library in (ml, torch):
            stats = [library.zeros(width, dtype=getattr(library, dtype)),
                     library.ones(width, dtype=getattr(library, dtype))]
            out = library.native_batch_norm(library.tensor(x), None, None, *stats, True, 0.1, 1e-5)
            results.append([t.numpy() for t in (*out, *stats)])
        for ours, theirs in zip(*results):
            assert differing(ours, theirs) == 0, x


# ---- float64 mv of a matrix laid out by columns: MKL's plain gemv, the columns fused in order -----------------------
COLUMN_SHAPES = [(2, 3), (5, 7), (16, 3), (3, 16), (33, 17), (64, 64), (100, 37), (37, 100), (1000, 50), (50, 1000)]


@pytest.fixture(params=[1, 2])
def threads(request):
    before = ml.parallel.num_threads()
    ml.parallel.set_num_threads(request.param)
    yield request.param
    ml.parallel.set_num_threads(before)


@pytest.mark.parametrize("n,m", COLUMN_SHAPES)
def test_float64_mv_of_a_transposed_matrix_is_torchs(n, m, threads):
    """mv(A.t(), v), v @ A (one mm row: MKL's gemm runs its gemv), addmv(y, A.t(), v) (from beta * y, alpha * v[j]
    first) and mv of a strided matrix (ATen's contiguous copy, a strided vector too): up to 90% of the outputs were
    an ulp or more off (minilora's BLAS)"""
    if threads == 2 and n > 100:  # (A.t() has n columns)
        pytest.skip("MKL splits more columns between threads (not modelled)")
    rng = np.random.default_rng(n * m)
    A, v, y, w = (rng.standard_normal(s) for s in ((n, m), (n,), (m,), (n, 2 * m)))
    cases = [lambda lib: lib.mv(lib.tensor(A).t(), lib.tensor(v)), lambda lib: lib.tensor(v) @ lib.tensor(A),
             lambda lib: lib.matmul(lib.tensor(A).t(), lib.tensor(v)),
             lambda lib: lib.mv(lib.tensor(w)[:, ::2], lib.tensor(y).repeat(2)[::2])]
    cases += [lambda lib, beta=beta, alpha=alpha: lib.addmv(lib.tensor(y), lib.tensor(A).t(), lib.tensor(v), beta=beta,
                                                           alpha=alpha)
              for beta, alpha in ((0.5, 0.3), (1, 1), (0, 0.7), (1, 0.3))]
    for case in cases:
        assert differing(case(ml).numpy(), case(torch).numpy()) == 0


@pytest.mark.parametrize("name,shapes", [("addmv", ((40,), (40, 70), (70,))), ("addr", ((40, 70), (40,), (70,)))])
def test_float64_addmv_and_addr_gradients_are_torchs(name, shapes):
    """addmv's vec gradient mat.t().mv(g) and addr's vec2 gradient g.t().mv(vec1): MKL's plain gemv"""
    rng = np.random.default_rng(13)
    for _ in range(5):
        arrays = [rng.standard_normal(s) for s in shapes]
        g = rng.standard_normal(shapes[0] if name == "addr" else shapes[1][:1])
        results = []
        for library in (ml, torch):
            tensors = [library.tensor(a, requires_grad=True) for a in arrays]
            out = getattr(library, name)(*tensors, beta=0.7, alpha=0.3)
            results.append([out.detach().numpy()] + [t.numpy() for t in library.autograd.grad(out, tensors,
                                                                                               library.tensor(g))])
        for ours, theirs in zip(*results):
            assert differing(ours, theirs) == 0


# ---- LU, det, slogdet, logdet of small matrices: MKL's unblocked getrf ------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 16])
def test_lu_factor_det_and_slogdet_of_small_matrices_are_torchs(dtype, n):
    """getrf up to order 16: the column below the pivot times its reciprocal (divided where one element is left in a
    matrix of order 4 or less), the trailing block by fused multiply-adds; det = det_P * prod(diag) in order and
    slogdet's sum(log |d|) of LU(A^T) for a contiguous A (ATen factors the transpose); a batch too. (inv, solve and
    det's gradient run getrs: not modelled, left -- measured on an F-contiguous A, a vector: order 2 matches the
    substitutions by the diagonal's reciprocal, order 8 the column-by-column ones divided, orders 3-5 neither.)"""
    rng = np.random.default_rng(n)
    for batch in ((), (3,)):
        for _ in range(8):
            A = rng.standard_normal(batch + (n, n)).astype(dtype)
            for name in ("linalg.lu_factor", "linalg.det", "linalg.slogdet", "logdet"):
                results = []
                for library in (ml, torch):
                    function = library
                    for part in name.split("."):
                        function = getattr(function, part)
                    out = function(library.tensor(A))
                    results.append([t.numpy() for t in (out if isinstance(out, tuple) else (out,))])
                for ours, theirs in zip(*results):
                    assert differing(ours, theirs) == 0, name


# ---- NaN's bits from max / min / aminmax over all elements -----------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_nan_of_a_whole_tensor_max_has_torchs_bits(dtype):
    """torch's vectorized max_all / min_all / aminmax OR the unordered compare's mask in: a NaN result has every bit
    set (float16 0xfe00), its sign bit too (minilora returned the input's NaN); amax and a dim's max keep it"""
    for n in (2, 9, 40):
        x = np.arange(n, dtype=np.float32)
        x[n // 2] = np.nan
        results = []
        for library in (ml, torch):
            t = library.tensor(x).to(getattr(library, dtype))
            outs = [library.max(t), library.min(t), t.max(), *library.aminmax(t), library.amax(t), t.max(0)[0]]
            results.append([np.asarray(out.detach().numpy()).tobytes() for out in outs])
        assert results[0] == results[1]


warnings.filterwarnings("ignore", message="Default grid_sample and affine_grid behavior")
