"""Round 16: var/std/var_mean/std_mean as torch's CPU kernels compute them, and sums of expanded views.

torch's CPU variance takes one of two kernels (ATen/native/ReduceOps.cpp's std_var_out / std_var_mean_out): a
float32/float64 var or std with one output is ``std_var_all_cpu`` (mean(), then the squared deviations added in
float64 in its iterator's order); every other var/std -- along dims, var_mean and std_mean always, 16-bit always --
is ``WelfordOps<scalar_t, double>`` (SharedReduceOps.h) in binary_kernel_reduce: each output's elements one by
one, in the iterator's order, with a running mean and M2 in double, the threads' partial results combined for a
single output of 32768+ elements. minilora computed all of them as a two-pass NumPy formula: float64 results
differed in their last bits in most rows, float32 ones in some, and var_mean's mean was mean()'s sum / count
(float32_sums.welford_moments / squared_deviation_sum now). torch's sum of an expanded view (stride 0) runs the
same cascade as any other layout; minilora summed it in NumPy's order.
"""
import itertools

import numpy as np
import pytest

import minilora as ml
from mkl_vml import use_torchs

torch = pytest.importorskip("torch")


def _values(shape, dtype, seed=0):
    """Normal values around 3 (their mean matters): the order of operations shows in the last bits."""
    return (np.random.default_rng(seed).standard_normal(shape) + 3).astype(dtype)


def _same_bits(ours, theirs):
    ours, theirs = ours.detach().numpy(), theirs.detach().numpy()
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    different = ours.reshape(-1).view(np.uint8).reshape(ours.size, -1) != \
        theirs.reshape(-1).view(np.uint8).reshape(theirs.size, -1)
    assert not different.any(), f"{different.any(axis=-1).sum()} of {ours.size} differ"


_SHAPES = [(7,), (3, 7), (13, 40), (70, 3), (4, 1, 6), (2, 3, 5, 4), (300, 40)]
_DIMS = [(shape, dims) for shape in _SHAPES for k in range(1, len(shape) + 1)
         for dims in itertools.combinations(range(len(shape)), k)]


def _calls(dims):
    """var/std/var_mean/std_mean as users write them: positional and keyword, correction 0 and 1, keepdim."""
    for lib in (ml, torch):
        yield lambda t, lib=lib: (lib.var(t, dims), t.std(dim=dims, correction=0),
                                  *lib.var_mean(t, dims, keepdim=True), *lib.std_mean(t, dim=dims, unbiased=False))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_var_std_and_their_means_along_dims_are_torchs_welford(dtype):
    """Every dim combination of 7 shapes (one output included: var_mean and std_mean take Welford there too):
    WelfordOps' bits (before: float64 wrong in most rows, float32 in 4 rows of 3074; var_mean's mean was mean()'s)."""
    for shape, dims in _DIMS:
        x = _values(shape, dtype, seed=sum(shape))
        ours, theirs = _calls(dims)
        for mine, torchs in zip(ours(ml.tensor(x)), theirs(torch.from_numpy(x))):
            _same_bits(mine, torchs)


def test_var_mean_of_a_big_tensor_combines_the_threads_as_torch(two_threads):
    """A single output of 32768+ elements: one Welford chunk a thread, combined in order (WelfordOps.combine)."""
    x = _values(40001, np.float64, seed=7)
    for mine, torchs in zip(ml.var_mean(ml.tensor(x)), torch.var_mean(torch.from_numpy(x))):
        _same_bits(mine, torchs)


@pytest.mark.parametrize("view", ["transposed", "sliced", "stepped"])
def test_whole_var_of_a_view_adds_in_torchs_iterator_order(view, two_threads):
    """var()/std() of a non-contiguous float64 tensor: std_var_all_cpu's order (memory order, a sum per 2-D loop
    call, chunks cut mid-row on 2 threads). (float32's rounding hid the difference in the views probed.)"""
    x = _values((130, 301), np.float64, seed=11)
    pick = {"transposed": lambda t: t.t(), "sliced": lambda t: t[:, 1:], "stepped": lambda t: t[::2, ::3]}[view]
    ours, theirs = pick(ml.tensor(x)), pick(torch.from_numpy(x))
    _same_bits(ours.var(), theirs.var())
    _same_bits(ours.std(correction=0), theirs.std(correction=0))


@pytest.mark.parametrize("dims", [0, 1, 2, (0, 2), (1, 2), None])
def test_var_of_expanded_and_permuted_views_is_torchs(dims):
    """Views with a stride of 0 (expand) or permuted dims: each output's elements in the iterator's order."""
    x = _values((5, 1, 9), np.float64, seed=13)
    ours, theirs = ml.tensor(x).expand(5, 4, 9), torch.from_numpy(x).expand(5, 4, 9)
    _same_bits(ours.var(dims), theirs.var(dims))
    _same_bits(ml.var_mean(ours, dims)[1], torch.var_mean(theirs, dims)[1])
    _same_bits(ours.permute(2, 0, 1).std(dims), theirs.permute(2, 0, 1).std(dims))


def test_welford_mean_keeps_torchs_infinities():
    """An infinity followed by another element: inf - inf in Welford's update, NaN as torch's; one last: kept."""
    x = np.array([[-np.inf, -np.inf], [1.0, -np.inf], [np.inf, 2.0], [3.0, 4.0]])
    _same_bits(ml.var_mean(ml.tensor(x), 1)[1], torch.var_mean(torch.from_numpy(x), 1)[1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape, where, count", [((5,), 0, 3), ((9, 17), 1, 3), ((70, 3), 0, 9), ((200, 50), 2, 2),
                                                 ((20000,), 1, 2)])
def test_sums_of_expanded_views_are_torchs(shape, where, count, dtype, two_threads):
    """sum/mean of an expanded view (a stride of 0) along every dim combination: torch's cascade through its
    iterator (before: NumPy's order, in 2571 of 4236 probed cases)."""
    x = _values(shape, dtype, seed=19)
    size = list(shape)
    size.insert(where, count)
    ours = ml.tensor(x).unsqueeze(where).expand(*size)
    theirs = torch.from_numpy(x).unsqueeze(where).expand(*size)
    for k in range(1, len(size) + 1):
        for dims in itertools.combinations(range(len(size)), k):
            _same_bits(ours.sum(dims), theirs.sum(dims))
            _same_bits(ours.mean(dims), theirs.mean(dims))


@pytest.mark.parametrize("dtype, shape, seed", [("float16", (40000,), 1), ("float16", (64, 1024), 1),
                                               ("bfloat16", (40000,), 7), ("bfloat16", (64, 1024), 0)])
def test_16bit_whole_sum_rounds_each_threads_part_as_torch(dtype, shape, seed, two_threads):
    """A 16-bit sum of 32768+ elements on 2 threads (two_pass_reduction): each thread's part is stored in a 16-bit
    buffer, then those added (before: one float32 sum rounded once, 1 ulp off for these seeds: 1 in 4 probed)."""
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 3 + 1
    x = torch.from_numpy(values).to(getattr(torch, dtype))
    ours = ml.tensor(x.float().numpy()).to(getattr(ml, dtype))
    assert ours.sum().float().item() == x.sum().float().item()
    every = tuple(range(len(shape)))
    assert ml.sum(ours, dim=every).float().item() == torch.sum(x, dim=every).float().item()


@pytest.mark.parametrize("width", [2, 5, 6, 13, 19, 62])
def test_float32_two_norm_of_rows_fuses_the_tail_as_torchs_build(width):
    """vector_norm(dim=-1) / norm(dim=-1) of float32 rows: 8-lane vectors, then the last width % 8 squares, which
    GCC's build adds 4 at a time rounded and the rest by fused multiply-adds (before: 19 of 2000 rows of width 13
    off)."""
    x = _values((2000, width), np.float32, seed=width)
    ours, theirs = ml.tensor(x), torch.from_numpy(x)
    _same_bits(ml.linalg.vector_norm(ours, dim=-1), torch.linalg.vector_norm(theirs, dim=-1))
    _same_bits(ours.norm(dim=1), theirs.norm(dim=1))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ord", [1, 2])
def test_linalg_vector_norm_is_torch_norms_kernel(ord, dtype):
    """linalg.vector_norm runs the kernel torch.norm runs (its order of additions over any dims), not NumPy's
    pairwise sums (before: 1 row in 10 off for ord=1)."""
    for shape in [(37,), (7, 29), (3, 22, 4)]:
        x = _values(shape, dtype, seed=len(shape))
        ours, theirs = ml.tensor(x), torch.from_numpy(x)
        for dims in [None, 0, -1, (0, -1), (-2, -1)]:
            if isinstance(dims, tuple) and len(shape) < 2:
                continue
            _same_bits(ml.linalg.vector_norm(ours, ord, dims), torch.linalg.vector_norm(theirs, ord, dims))


def test_float64_logsumexp_sums_in_torchs_order(monkeypatch):
    """logsumexp of float64: torch's composite adds exp(x - max) with its sum kernel (before: NumPy's pairwise sum,
    1 row in 20 off). The order is what is checked: torch's exp and log are put in for NumPy's (MKL's float64 exp
    is NumPy's on an Intel Sapphire Rapids, 1 ulp off it in ~4% of elements on an AMD EPYC: tests/mkl_vml.py)."""
    use_torchs(monkeypatch, "exp", np.float64)
    use_torchs(monkeypatch, "log", np.float64)
    x = _values((300, 40), np.float64, seed=29)
    ours, theirs = ml.tensor(x), torch.from_numpy(x)
    for dims in (0, 1, (0, 1)):
        _same_bits(ml.logsumexp(ours, dims), torch.logsumexp(theirs, dims))
        _same_bits(ours.logsumexp(dim=dims, keepdim=True), theirs.logsumexp(dim=dims, keepdim=True))


def test_float64_p_norm_powers_are_cs_pow():
    """vector_norm(x, 3) of float64: |x|^3 and the root by C's pow, as torch's NormOps (NumPy's float64 power
    differs in 1 element of 20)."""
    x = _values((200, 30), np.float64, seed=31)
    for dims in (0, 1, None):
        _same_bits(ml.linalg.vector_norm(ml.tensor(x), 3, dims), torch.linalg.vector_norm(torch.from_numpy(x), 3, dims))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_norm_over_dims_of_size_one_is_the_absolute_value(dtype):
    """A norm over dims of size 1 only (one element an output): torch gives |x|, not pow(pow(|x|, p), 1/p)."""
    x = _values((500, 1), dtype, seed=37)
    ours, theirs = ml.tensor(x), torch.from_numpy(x)
    for p in (3, 0.5, 2):
        _same_bits(ml.linalg.vector_norm(ours, p, dim=1), torch.linalg.vector_norm(theirs, p, dim=1))
        _same_bits(ours.norm(p, dim=-1, keepdim=True), theirs.norm(p, dim=-1, keepdim=True))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_two_norm_along_a_views_contiguous_dim_is_vectorized_as_torch(dtype):
    """x.T.norm(dim=0) reduces memory-contiguous rows: torch's is_reduce_lastdim path (8-lane vectors), which the
    layout decides, not the dim's index (before: 2 rows in 3 of float64 off)."""
    x = _values((300, 257), dtype, seed=41)
    ours, theirs = ml.tensor(x).T, torch.from_numpy(x).T
    _same_bits(ml.linalg.vector_norm(ours, dim=0), torch.linalg.vector_norm(theirs, dim=0))
    _same_bits(ours.norm(), theirs.norm())


def test_float32_logaddexp2_is_torchs_sleef_formula():
    """logaddexp2 of float32: max + log1p(exp2(-|a - b|)) * (1 / ln 2) with SLEEF's exp2 and log1p, the last
    product and sum fused, as torch's vectorized kernel (before: / ln 2 and C's exp2, 1 element in 8 off). (The
    scalar tail of a row, its last n % 32 elements, runs glibc's exp2f and log1pf, taken as correctly rounded as
    elsewhere in float32_math: 1 ulp off in a few tail elements; these rows have none.)"""
    rng = np.random.default_rng(43)
    a, b = (rng.standard_normal((2, 5024)) * 3).astype(np.float32)
    _same_bits(ml.logaddexp2(ml.tensor(a), ml.tensor(b)), torch.logaddexp2(torch.from_numpy(a), torch.from_numpy(b)))
    _same_bits(ml.tensor(a[:256]).reshape(8, 32).logaddexp2(ml.tensor(b[:32])),
               torch.from_numpy(a[:256]).reshape(8, 32).logaddexp2(torch.from_numpy(b[:32])))


def test_float64_logaddexp2_within_the_envelope_of_its_exp2_and_log1p():
    """float64 logaddexp2: torch's formula and fusing, but NumPy's exp2 and log1p for SLEEF's double ones (not
    ported): 1 element in 40 differs (1 in 8 before), by at most 8 ulps of max(|a|, |b|) (the sum cancels near 0:
    measured 8)."""
    rng = np.random.default_rng(47)
    a, b = rng.standard_normal((2, 20000)) * 3
    ours = ml.logaddexp2(ml.tensor(a), ml.tensor(b)).numpy()
    theirs = torch.logaddexp2(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert np.all(np.abs(ours - theirs) <= 8 * np.spacing(np.maximum(np.abs(a), np.abs(b))))
    assert np.mean(ours != theirs) < 0.05


def test_float64_weighted_embedding_bag_adds_rounded_products_in_bag_order():
    """F.embedding_bag(mode='sum', per_sample_weights=...) in float64: ATen's own loop (FBGEMM takes float32 only)
    rounds each product and adds it into the bag in order, unfused (before: fused without a padding_idx, half the
    values off). (The per_sample_weights gradient is torch's BLAS dot, MKL's order: not reproduced, see ops/bags.)"""
    rng = np.random.default_rng(53)
    weight, samples = rng.standard_normal((50, 16)), rng.standard_normal(200)
    ids, offsets = rng.integers(0, 50, 200), np.array([0, 5, 5, 30, 31, 100, 150])
    for padding_idx in (None, 3):
        ours = ml.nn.functional.embedding_bag(ml.tensor(ids), ml.tensor(weight), ml.tensor(offsets), mode="sum",
                                              per_sample_weights=ml.tensor(samples), padding_idx=padding_idx)
        theirs = torch.nn.functional.embedding_bag(torch.from_numpy(ids), torch.from_numpy(weight),
                                                   torch.from_numpy(offsets), mode="sum",
                                                   per_sample_weights=torch.from_numpy(samples),
                                                   padding_idx=padding_idx)
        _same_bits(ours, theirs)


def test_logaddexp2_differentiates_twice_as_torch():
    """create_graph=True through logaddexp2 (its own Function since this round): torch's recorded formula
    g / (1 + 2^(b - a)), so second derivatives are torch's."""
    rng = np.random.default_rng(59)
    a, b = rng.standard_normal((2, 3, 4))
    grads = []
    for lib in (ml, torch):
        x, y = lib.tensor(a, requires_grad=True), lib.tensor(b, requires_grad=True)
        gx, gy = lib.autograd.grad((lib.logaddexp2(x, y) ** 2).sum(), (x, y), create_graph=True)
        grads.append([t.detach().numpy() for t in (gx, gy, *lib.autograd.grad((gx * gy).sum(), (x, y)))])
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
