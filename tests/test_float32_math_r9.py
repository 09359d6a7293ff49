"""float32 forward results of the elementwise math, bit for bit as torch's CPU kernels give them.

torch (x86 wheels, MKL) computes exp/log/log2/log10/tanh/sin/cos with MKL's vector math, nearly
always the correctly rounded result: minilora rounds a float64 result once, and must agree on all but
a small share (NumPy's own float32 exp disagreed on 39%). sigmoid and silu are ATen's formulas over
SLEEF's exp with a scalar tail in C's expf: minilora's float32_math ports them, and must agree on
every element, edge cases included, whatever the length (the tail) and the thread count (the chunks).

Under torch's "default" build (``ATEN_CPU_CAPABILITY=default``, or an x86 CPU without AVX2 and FMA) torch
calls glibc's ``expf``, ``expm1f``, ``log1pf``, ``tanhf`` on every element instead of SLEEF's; minilora
follows it with the correctly rounded result (``float32_math.CPU_CAPABILITY``), and these tests check a
bound in ulps there instead of the bits (``assert_as_torch``), or skip what tests SLEEF itself.
"""
import numpy as np
import pytest

import minilora
from minilora import float32_math, mkl_vml, parallel

torch = pytest.importorskip("torch")
F = torch.nn.functional

EDGES = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-38, -1e-38, 1e-7, -1e-7,
                  88.72, 88.73, -87.33, -87.34, -88.0, -103.9, -104.1, -150.0, 99.9, 100.1, 1e30, -1e30,
                  0.34657359, -0.34657359, 0.5, -0.5, 1.0, -1.0, 17.0, -17.0], np.float32)


def _values(n, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * scale).astype(np.float32)
    x[:len(EDGES)] = EDGES[:n]
    return x


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (a == b) & (np.signbit(a) == np.signbit(b)) | (np.isnan(a) & np.isnan(b))


GLIBC = float32_math.CPU_CAPABILITY == "default"  # torch's functions are glibc's, not SLEEF's
needs_sleef = pytest.mark.skipif(GLIBC, reason="torch's default build runs no SLEEF: it calls glibc's functions")


def assert_as_torch(theirs, ours, glibc_ulps, scale=None):
    """The same bits; under torch's default build within ``glibc_ulps`` of ``scale``'s ulp (``theirs``'s by
    default): glibc's functions are not correctly rounded, minilora's stand-ins are."""
    same = _same_bits(theirs, ours)
    if not GLIBC:
        assert same.all(), f"{int((~same).sum())} differ, e.g. where x = {np.flatnonzero(~same)[:5]}"
        return
    unit = np.spacing(np.abs(np.asarray(theirs if scale is None else scale, np.float32)))
    with np.errstate(invalid="ignore"):
        near = np.abs(np.asarray(theirs, np.float64) - ours) <= glibc_ulps * unit.astype(np.float64)
    assert (same | near).all()


def _both(fn_torch, fn_minilora, x):
    return fn_torch(torch.from_numpy(x)).numpy(), fn_minilora(minilora.tensor(x)).numpy()


@pytest.mark.parametrize("n", [1, 7, 31, 32, 45, 1000, 32768 + 45, 70001])
@pytest.mark.parametrize("name", ["sigmoid", "silu"])
def test_sigmoid_and_silu_are_torchs_bits(name, n):
    """SLEEF's exp in the vectorized body, C's in each chunk's last n % 32 elements."""
    fn_torch = torch.sigmoid if name == "sigmoid" else F.silu
    fn_minilora = minilora.sigmoid if name == "sigmoid" else minilora.nn.functional.silu
    x = _values(n, scale=4.0, seed=n)
    ours, theirs = None, None
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(parallel.num_threads())  # the chunks' ends depend on the thread count
        theirs, ours = _both(fn_torch, fn_minilora, x)
    finally:
        torch.set_num_threads(threads)
    assert_as_torch(theirs, ours, glibc_ulps=2)


def test_sigmoid_and_silu_views_and_2d():
    x = _values(64 * 37, seed=3).reshape(64, 37)
    for fn_torch, fn_minilora in [(torch.sigmoid, minilora.sigmoid), (F.silu, minilora.nn.functional.silu)]:
        theirs, ours = _both(fn_torch, fn_minilora, x.T.copy())
        assert_as_torch(theirs, ours, glibc_ulps=2)
        theirs = fn_torch(torch.from_numpy(x).T).numpy()
        ours = fn_minilora(minilora.tensor(x).T).numpy()  # a transposed view: torch keeps its layout
        assert_as_torch(theirs, ours, glibc_ulps=2)


def test_silu_backward_reads_torchs_sigmoid():
    """silu's saved sigmoid is 1 / (1 + exp(-x)) with the forward's exp: the bits torch's backward recomputes."""
    x = _values(4000, seed=5)
    s = np.empty_like(x)
    out = np.empty_like(x)
    float32_math.silu_and_sigmoid(x, s, out)
    assert_as_torch(torch.sigmoid(torch.from_numpy(x)).numpy(), s, glibc_ulps=2)


@needs_sleef
def test_sleef_exp_on_the_whole_range():
    """SLEEF's exp itself (torch's Vectorized<float>::exp) over its whole range, seen through torch's
    sigmoid(-x) = 1 / (1 + exp(x)) on a length without a scalar tail (a multiple of 32, one thread's chunk)."""
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-110, 110, 32 * 512), rng.uniform(-1, 1, 32 * 512)]).astype(np.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        theirs = torch.sigmoid(torch.from_numpy(-x)).numpy()
    finally:
        torch.set_num_threads(threads)
    ours = np.float32(1) / (np.float32(1) + float32_math.sleef_exp(x))
    assert _same_bits(theirs, ours).all()


@pytest.mark.parametrize("name,domain,most", [("exp", "all", 0.02), ("log", "positive", 0.10),
                                              ("log2", "positive", 0.01), ("log10", "positive", 0.01),
                                              ("tanh", "all", 0.01), ("sin", "all", 0.06), ("cos", "all", 0.06),
                                              ("tan", "all", 0.19), ("asin", "unit", 0.07), ("acos", "unit", 0.10),
                                              ("atan", "all", 0.08), ("sinh", "all", 0.01), ("cosh", "all", 0.01),
                                              ("exp2", "all", 0.07), ("atanh", "unit", 0.01)])
def test_mkl_kernels_correctly_rounded(name, domain, most):
    """MKL's results (and SLEEF's sinh/cosh/exp2/atanh) are the correctly rounded ones but for a small
    share, and never more than 1 ulp from them (but at float32's overflow). (MKL's code paths differ by
    CPU vendor and instruction set: a share, never the bits.)"""
    if GLIBC and name in ("sinh", "cosh", "atanh", "exp2"):
        pytest.skip("torch's default build calls glibc's sinhf/coshf/atanhf/exp2f (26% off the correct rounding)")
    x = _values(20000, seed=11)
    if domain == "positive":
        x = np.abs(x)
    if domain == "unit":
        x = np.tanh(x / 3).astype(np.float32)
    theirs, ours = _both(getattr(torch, name), getattr(minilora, name), x)
    differ = ~_same_bits(theirs, ours)
    assert differ.mean() <= most
    if name in ("exp", "log", "log2", "log10", "tanh"):  # (the others: 1 ulp on a few tiny or huge edges)
        assert not differ[:len(EDGES)][np.isfinite(EDGES) & (np.abs(EDGES) < 1e4)].any()
    finite = differ & np.isfinite(theirs) & np.isfinite(ours)  # (tan next to a pole: MKL's 1.7e38 where
    assert (np.abs(ours[finite].astype(np.float64) - theirs[finite]) <=  # the exact value rounds to inf)
            np.spacing(np.abs(theirs[finite]))).all()  # never more than 1 ulp apart


def test_sigmoid_float64_keeps_tiny_values():
    """float64: torch's 1 / (1 + exp(-x)), not (1 + tanh(x/2)) / 2, which flushed 3.7e-44 to 0."""
    x = np.array([-100.0, -700.0, -745.0, 0.5, 40.0])
    theirs, ours = _both(torch.sigmoid, minilora.sigmoid, x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-15, atol=0)
    assert ours[0] > 0


@pytest.mark.parametrize("n", [1, 31, 45, 1000, 70001])
def test_expm1_is_sleefs_on_every_element(n):
    """torch.expm1 runs SLEEF's expm1 on all elements (the masked last vector too): no scalar tail."""
    x = _values(n, scale=6.0, seed=n)
    theirs, ours = _both(torch.expm1, minilora.expm1, x)
    assert_as_torch(theirs, ours, glibc_ulps=1)


@pytest.mark.parametrize("name,call", [
    ("elu", lambda L, x: L.nn.functional.elu(x)), ("elu_alpha", lambda L, x: L.nn.functional.elu(x, 0.7)),
    ("selu", lambda L, x: L.nn.functional.selu(x)), ("celu", lambda L, x: L.nn.functional.celu(x, 0.5)),
    ("gelu_tanh", lambda L, x: L.nn.functional.gelu(x, approximate="tanh"))])
def test_kernels_over_sleef_are_torchs_in_the_vectorized_body(name, call):
    """The vectorized body bit for bit (elu's family: SLEEF's expm1 and float32 constants; gelu's tanh
    form: SLEEF's tanh and a fused multiply-add); the scalar tail calls C's expm1f / tanhf, which
    minilora rounds correctly, as glibc 2.36 does but in ~8% of the cases: 1 ulp at most there."""
    body = _values(32 * 40, scale=3.0, seed=2)  # a multiple of 32: no scalar tail
    theirs, ours = (call(L, L.tensor(body)).numpy() for L in (torch, minilora))
    assert_as_torch(theirs, ours, glibc_ulps=2, scale=np.maximum(np.abs(body), np.abs(theirs)))  # (gelu: x's)
    x = _values(32 * 40 + 29, scale=3.0, seed=3)
    theirs, ours = (call(L, L.tensor(x)).numpy() for L in (torch, minilora))
    body = x.size if GLIBC else 32 * 40  # (default: every element C's, as the tail's)
    assert_as_torch(theirs[:body], ours[:body], glibc_ulps=2, scale=np.maximum(np.abs(x), np.abs(theirs))[:body])
    if GLIBC:  # (checked above)
        return
    with np.errstate(invalid="ignore"):  # (inf - inf: those agree bit for bit)
        near = np.abs(theirs.astype(np.float64) - ours) <= np.spacing(np.abs(theirs))
    assert (_same_bits(theirs, ours) | near).all()


@pytest.mark.parametrize("n", [1, 45, 1000])
def test_log1p_is_sleefs_on_every_element(n):
    x = np.abs(_values(n, scale=6.0, seed=n)) - 0.5  # (below -1: nan, -1: -inf)
    theirs, ours = _both(torch.log1p, minilora.log1p, x)
    assert_as_torch(theirs, ours, glibc_ulps=1)


@pytest.mark.parametrize("name,call", [
    ("softplus", lambda L, x: L.nn.functional.softplus(x)),
    ("softplus_beta", lambda L, x: L.nn.functional.softplus(x, beta=2.0, threshold=5.0)),
    ("mish", lambda L, x: L.nn.functional.mish(x))])
def test_softplus_and_mish_are_torchs_kernel(name, call):
    """SLEEF's exp, log1p (and tanh) chained in the vectorized body, bit for bit; in the scalar tail
    torch chains glibc's expf, log1pf (and tanhf): within 2 ulps there."""
    body = _values(32 * 40, scale=5.0, seed=4)
    theirs, ours = (call(L, L.tensor(body)).numpy() for L in (torch, minilora))
    assert_as_torch(theirs, ours, glibc_ulps=3)
    x = _values(32 * 40 + 29, scale=5.0, seed=5)
    theirs, ours = (call(L, L.tensor(x)).numpy() for L in (torch, minilora))
    body = x.size if GLIBC else 32 * 40  # (default: every element C's, as the tail's)
    assert_as_torch(theirs[:body], ours[:body], glibc_ulps=3)
    if GLIBC:  # (checked above)
        return
    with np.errstate(invalid="ignore"):
        near = np.abs(theirs.astype(np.float64) - ours) <= 2 * np.spacing(np.abs(theirs))
    assert (_same_bits(theirs, ours) | near).all()


@pytest.mark.parametrize("shape", [(), (0,), (3, 0)])
def test_zero_d_and_empty_keep_their_shape(shape):
    calls = [lambda L, x: L.sigmoid(x), lambda L, x: L.nn.functional.silu(x), lambda L, x: L.expm1(x),
             lambda L, x: L.log1p(x), lambda L, x: L.nn.functional.elu(x), lambda L, x: L.nn.functional.softplus(x),
             lambda L, x: L.nn.functional.mish(x), lambda L, x: L.nn.functional.gelu(x, approximate="tanh"),
             lambda L, x: L.exp(x), lambda L, x: L.tan(x)]
    x = np.full(shape, -0.75, np.float32)
    for call in calls:
        theirs, ours = (call(L, L.tensor(x)).numpy() for L in (torch, minilora))
        assert ours.shape == theirs.shape  # (one element is all scalar tail: glibc's tanhf, so 2 ulps)
        assert (np.abs(theirs.astype(np.float64) - ours) <= 2 * np.spacing(np.abs(theirs))).all()


def test_pow_as_torchs_kernel():
    """Exponents 2, 3, -1, -2 by multiplication, bit for bit; other number exponents (taken as float32)
    and float32 tensors of exponents: SLEEF's pow, the correctly rounded result in ~98% of elements."""
    x = _values(20000, seed=13)
    for exponent in (2, 3, -1, -2, 3.0, -2.0):
        theirs, ours = (L.tensor(x).pow(exponent).numpy() for L in (torch, minilora))
        assert _same_bits(theirs, ours).all()
    for exponent in (1.7, 0.3, -1.5, 4.0):
        theirs, ours = ((L.tensor(x) ** exponent).numpy() for L in (torch, minilora))
        assert (~_same_bits(theirs, ours)).mean() < 0.03  # (NumPy's float32 power: 20%)
    y = np.abs(_values(20000, seed=14)) / 2
    theirs, ours = ((L.tensor(np.abs(x)) ** L.tensor(y)).numpy() for L in (torch, minilora))
    assert (~_same_bits(theirs, ours)).mean() < 0.03



@needs_sleef
def test_sleef_exp_where_the_reduced_argument_is_largest():
    """float32_math rounds Horner's fused multiply-adds by adding a constant per step, exact only while
    each step's result stays in one binade: the edges are |s| = ln2 / 2, at d = (k + 1/2) ln 2. torch's
    sigmoid(-d) = 1 / (1 + exp(d)), and minilora's sigmoid (which takes exp of -x in the same pass)."""
    k = np.arange(-125, 128, dtype=np.float64)
    centre = ((k + 0.5) * np.log(2)).astype(np.float32)
    steps = np.arange(-16, 16, dtype=np.int32)  # 32 neighbours of each, a multiple of 32 in all
    x = (centre.view(np.int32)[:, None] + steps).view(np.float32).reshape(-1)
    threads, ours_threads = torch.get_num_threads(), parallel.num_threads()
    try:
        torch.set_num_threads(1)
        parallel.set_num_threads(1)
        theirs = torch.sigmoid(torch.from_numpy(-x)).numpy()
        theirs_silu = F.silu(torch.from_numpy(-x)).numpy()
        ours, ours_silu = minilora.sigmoid(minilora.tensor(-x)), minilora.nn.functional.silu(minilora.tensor(-x))
    finally:
        torch.set_num_threads(threads)
        parallel.set_num_threads(ours_threads)
    assert _same_bits(theirs, ours.numpy()).all() and _same_bits(theirs_silu, ours_silu.numpy()).all()
    with np.errstate(over="ignore"):
        exp = np.float32(1) / (np.float32(1) + float32_math.sleef_exp(x))
    assert _same_bits(theirs, exp).all()


@pytest.mark.parametrize("name", ["exp", "tanh", "log", "sin"])
def test_large_arrays_round_once_block_by_block(name, monkeypatch):
    """Above one cache block float32_math computes the float64 result block by block: the same numbers
    as one float64 pass over the whole array, in the array's shape. (Its open formula: without MKL, where
    ``mkl_vml`` calls MKL's own functions instead.)"""
    monkeypatch.setattr(mkl_vml, "applies", lambda name, a: False)
    x = _values(3 * 32768 + 45, scale=30.0, seed=17)
    x = np.abs(x) if name == "log" else x
    fn = getattr(np, name)
    for a in (x, x[:300 * 300].reshape(300, 300)):
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # (inf, 0, sin(inf))
            expected = fn(a, dtype=np.float64).astype(np.float32)
            ours = float32_math.vml(name, a)
        assert ours.shape == a.shape and _same_bits(expected, ours).all()
