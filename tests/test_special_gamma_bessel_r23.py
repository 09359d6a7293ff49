"""torch.special's incomplete gamma, Bessel and Airy functions against torch, bit for bit: gammainc / gammaincc
(torch.igamma / igammac, x.igamma(_), x.igammac(_)) on a grid that takes every route of ATen's calc_igamma (the
edges, Temme's expansion, both series, the continued fraction) in the vectorized loop, its scalar tail and
basic_loop, and bessel_j0/j1/y0/y1, modified_bessel_k0/k1, scaled_modified_bessel_k0/k1, airy_ai (and the siblings
modified_bessel_i0/i1, spherical_bessel_j0) on every branch; their gradients (igamma's for x only, as
derivatives.yaml, also under create_graph; none for the Bessel functions; no forward mode), the errors torch raises,
and the distributions whose cdf is gammainc."""
import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")

# a (and x) from tiny to large: the edges (0, inf, nan, negative), a ~ x around 20 and past 200 (Temme), x <= 0.5
# and in (0.5, 1.1] (the series of Q), x > 1.1 beyond a (the continued fraction)
_GAMMA_POINTS = np.array([0.0, 1e-30, 1e-6, 0.03, 0.3, 0.5, 0.7, 1.0, 1.05, 1.1, 1.7, 2.5, 4.0, 7.3, 12.0, 19.0,
                          21.0, 24.5, 30.0, 55.0, 150.0, 199.0, 205.0, 230.0, 400.0, 1e4, np.inf, -1.0, np.nan])


def _grid(dtype):
    a, x = np.meshgrid(_GAMMA_POINTS, _GAMMA_POINTS)
    a, x = a.ravel(), x.ravel()
    rng = np.random.default_rng(0)
    near = 10 ** rng.uniform(-1, 3, 600)  # (a ~ x: Temme where a > 20, the continued fraction or a series below)
    return (np.concatenate([a, near]).astype(dtype), np.concatenate([x, near * rng.uniform(0.5, 1.5, 600)])
            .astype(dtype))


def _same_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    return (got == want) | (np.isnan(got) & np.isnan(want))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["gammainc", "gammaincc"])
def test_incomplete_gamma_bits_in_the_vectorized_loop_and_its_scalar_tail(name, dtype):
    a, x = _grid(dtype)
    want = getattr(torch.special, name)(torch.from_numpy(a), torch.from_numpy(x)).numpy()
    got = getattr(ml.special, name)(ml.tensor(a), ml.tensor(x)).numpy()
    assert _same_bits(got, want).all(), np.flatnonzero(~_same_bits(got, want))[:5]
    # every other element of a wider array: not contiguous, so torch's basic_loop (calc_igamma inlined, fused);
    # then 15 elements a call: all in the vectorized loop's scalar tail (calc_igamma out of line, its unfused copy)
    wide_a, wide_x = np.repeat(a, 2), np.repeat(x, 2)
    want = getattr(torch.special, name)(torch.from_numpy(wide_a)[::2], torch.from_numpy(wide_x)[::2]).numpy()
    got = getattr(ml.special, name)(ml.tensor(wide_a)[::2], ml.tensor(wide_x)[::2]).numpy()
    assert _same_bits(got, want).all(), np.flatnonzero(~_same_bits(got, want))[:5]
    for start in range(0, 300, 15):  # (the first 300: every route, the edges included)
        part = slice(start, start + 15)
        want = getattr(torch.special, name)(torch.from_numpy(a[part]), torch.from_numpy(x[part])).numpy()
        got = getattr(ml.special, name)(ml.tensor(a[part]), ml.tensor(x[part])).numpy()
        assert _same_bits(got, want).all(), (a[part], x[part])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_incomplete_gamma_16bit_computes_in_float32_and_rounds(dtype):
    a, x = _grid(np.float32)
    ta, tx = (torch.from_numpy(v).to(getattr(torch, dtype)) for v in (a, x))
    ma, mx = (ml.tensor(v.float().numpy()).to(getattr(ml, dtype)) for v in (ta, tx))
    for torch_fn, ml_fn in ((torch.igamma, ml.igamma), (torch.igammac, ml.igammac)):
        want, got = torch_fn(ta, tx), ml_fn(ma, mx)
        assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
        assert _same_bits(got.float().numpy(), want.float().numpy()).all()


_BESSEL_POINTS = np.concatenate([
    [0.0, -0.0, 1e-30, 5e-6, 1e-5, 2e-5, 0.1, 1.0, 2.0, 2.0000002, 2.09, -2.09, 3.0, 4.99, 5.0, 5.01, 8.0, 8.3203353,
     9.0, 30.0, 103.892, 104.0, 700.0, 1e10, np.inf, -np.inf, np.nan, -1.0, -4.0, -7.5, -30.0, -1e3],
    np.linspace(-12, 12, 241), 10 ** np.linspace(-8, 3, 45)])
_BESSEL = ["bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1", "modified_bessel_k0", "modified_bessel_k1",
           "scaled_modified_bessel_k0", "scaled_modified_bessel_k1", "airy_ai",
           # (their siblings, which were i0's and i1's values, and sin(x) / x by NumPy's sin: ATen's own kernels)
           "modified_bessel_i0", "modified_bessel_i1", "spherical_bessel_j0"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bessel_and_airy_bits(dtype):
    x = _BESSEL_POINTS.astype(dtype)
    for name in _BESSEL:
        want = getattr(torch.special, name)(torch.from_numpy(x)).numpy()
        got = getattr(ml.special, name)(ml.tensor(x)).numpy()
        assert got.dtype == want.dtype
        assert _same_bits(got, want).all(), (name, x[~_same_bits(got, want)][:5])


def test_bessel_spellings_dtypes_and_no_gradient():
    x = [0.5, 1.5, 3.0]
    assert torch.special.bessel_j0(input=torch.tensor(x)).tolist() == ml.special.bessel_j0(input=ml.tensor(x)).tolist()
    assert torch.special.airy_ai(x=torch.tensor(x)).tolist() == ml.special.airy_ai(x=ml.tensor(x)).tolist()
    # integers in the default float dtype; out= of another dtype takes the float32 result
    want = torch.special.modified_bessel_k1(torch.tensor([1, 2]), out=torch.empty(2, dtype=torch.float64))
    got = ml.special.modified_bessel_k1(ml.tensor([1, 2]), out=ml.empty(2, dtype=ml.float64))
    assert got.dtype == ml.float64 and got.tolist() == want.tolist()
    assert ml.special.bessel_y1(ml.tensor([True])).dtype == ml.float32
    # torch records no gradient: the result does not require grad
    leaf = ml.tensor(x, requires_grad=True)
    for name in _BESSEL:
        result = getattr(ml.special, name)(leaf)
        assert not result.requires_grad and result.grad_fn is None
    meta = ml.special.scaled_modified_bessel_k0(ml.empty(2, 3, device="meta"))
    assert meta.device.type == "meta" and tuple(meta.shape) == (2, 3)
    meta = ml.special.gammaincc(ml.empty(3, device="meta"), ml.empty(2, 1, device="meta", dtype=ml.float64))
    assert meta.device.type == "meta" and tuple(meta.shape) == (2, 3) and meta.dtype == ml.float64


def _raised(call, lib):
    """The exception's class names (its own and its bases': minilora's ShapeError is a RuntimeError) and words."""
    try:
        call(lib)
    except Exception as error:  # noqa: BLE001  (compared with torch's below)
        return [cls.__name__ for cls in type(error).__mro__], str(error)
    return None


_ERRORS = [
    lambda t: t.special.gammainc(t.tensor([1.0]), 2.0),
    lambda t: t.special.gammaincc(2.0, t.tensor([1.0])),
    lambda t: t.igamma(t.tensor([1.0]), [2.0]),
    lambda t: t.tensor([1.0]).igamma(2),
    lambda t: t.tensor([1.0]).igammac_(2.0),
    lambda t: t.igamma(t.tensor([1, 2]), t.tensor([1, 2])),
    lambda t: t.igammac(t.tensor([1.0]), t.tensor([1.0]).to(t.complex64)),
    lambda t: t.special.gammainc(t.zeros(3), t.zeros(2)),
    lambda t: t.zeros(3).igamma_(t.ones(2, 3)),
    lambda t: t.tensor([1, 2]).igammac_(t.tensor([1.0, 2.0])),
    lambda t: t.special.bessel_j0(2.0),
    lambda t: t.special.airy_ai(t.tensor([1.0]).half()),
    lambda t: t.special.bessel_y0(t.tensor([1.0]).to(t.bfloat16)),
    lambda t: t.special.modified_bessel_k0(t.tensor([1.0]).to(t.complex64)),
    lambda t: t.special.modified_bessel_i1(t.tensor([1.0]).half()),  # (were computed in float16)
    lambda t: t.special.spherical_bessel_j0(t.tensor([1.0]).to(t.bfloat16)),
    lambda t: t.special.bessel_j0(t.tensor([1.0]), out=t.empty(1, dtype=t.int64)),  # (was written, truncated)
    lambda t: t.igammac(t.tensor([1.0]), t.tensor([1.0]), out=t.empty(1, dtype=t.int64)),
]


@pytest.mark.parametrize("index", range(len(_ERRORS)))
def test_errors_in_torchs_words(index):
    want, got = _raised(_ERRORS[index], torch), _raised(_ERRORS[index], ml)
    assert want is not None and got is not None
    assert want[0][0] in got[0] and got[1] == want[1]


def test_spellings_out_in_place_and_promotion():
    a, x = [0.5, 2.0, 7.0], [1.0, 3.0, 0.25]
    for lib in (torch, ml):
        ta, tx = lib.tensor(a), lib.tensor(x)
        values = [lib.igamma(ta, tx), lib.special.gammainc(input=ta, other=tx), ta.igamma(tx), ta.clone().igamma_(tx),
                  lib.igammac(ta, tx), ta.igammac(tx), ta.clone().igammac_(tx),
                  lib.special.gammaincc(ta, tx, out=lib.empty(3)),
                  lib.special.gammainc(lib.tensor([1, 2, 3]), tx),  # (an integer beside a float promotes)
                  lib.igamma(ta.double(), tx), ta.clone().igamma_(tx.double())]
        if lib is torch:
            want = [(str(v.dtype).split(".")[-1], v.tolist()) for v in values]
    assert [(str(v.dtype).split(".")[-1], v.tolist()) for v in values] == want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_for_x_is_derivatives_yaml_and_none_for_a(dtype):
    a = np.array([0.5, 2.0, 7.0, 30.0], dtype)
    x = np.array([[0.25], [3.0]], dtype)  # (broadcast: the gradient is summed back to x's shape)
    for name, node in (("gammainc", "IgammaBackward0"), ("gammaincc", "IgammacBackward0")):
        tx, mx = torch.tensor(x, requires_grad=True), ml.tensor(x, requires_grad=True)
        want = getattr(torch.special, name)(torch.tensor(a), tx)
        got = getattr(ml.special, name)(ml.tensor(a), mx)
        assert type(want.grad_fn).__name__ == node and type(got.grad_fn).__name__ == node
        want.sum().backward()
        got.sum().backward()
        # (exp, log and lgamma: MKL's and SLEEF's last bit in torch, not reproduced: within a few ulps)
        np.testing.assert_allclose(mx.grad.numpy(), tx.grad.numpy(), rtol=8 * np.finfo(dtype).eps)
        ta, ma = torch.tensor(a, requires_grad=True), ml.tensor(a, requires_grad=True)
        words = f"the derivative for '{node[:-9].lower()}: input' is not implemented."
        with pytest.raises(NotImplementedError) as want_error:
            getattr(torch.special, name)(ta, torch.tensor(x)).sum().backward()
        with pytest.raises(NotImplementedError, match=words) as got_error:
            getattr(ml.special, name)(ma, ml.tensor(x)).sum().backward()
        assert str(got_error.value) == str(want_error.value)


@pytest.mark.parametrize("case", ["Gamma", "Chi2"])  # (InverseGamma's, through TransformedDistribution: r22's test)
def test_gamma_family_cdfs_are_gammainc(case):
    value = [0.3, 1.0, 2.5, 9.0]
    made = {}
    for lib in (torch, ml):
        D = lib.distributions
        dist = {"Gamma": lambda: D.Gamma(lib.tensor([2.0, 0.5, 3.5, 40.0]), lib.tensor([1.5, 0.5, 2.0, 4.0])),
                "Chi2": lambda: D.Chi2(lib.tensor([1.0, 3.0, 4.0, 50.0]))}[case]()
        made[lib] = dist.cdf(lib.tensor(value))
    assert made[ml].tolist() == made[torch].tolist()


def test_gradient_differentiates_again_under_create_graph():
    a = [0.5, 3.0, 2.0]
    for name in ("gammainc", "gammaincc"):
        answers = []
        for lib in (torch, ml):
            x = lib.tensor([1.0, 2.0, 0.5], dtype=lib.float64, requires_grad=True)
            first, = lib.autograd.grad(getattr(lib.special, name)(lib.tensor(a, dtype=lib.float64), x).sum(), x,
                                       create_graph=True)
            second, = lib.autograd.grad(first.sum(), x)
            answers.append((first.tolist(), second.tolist()))
        np.testing.assert_allclose(np.array(answers[1]), np.array(answers[0]), rtol=1e-14)


@pytest.mark.parametrize("call", ["lib.special.gammaincc(lib.tensor([0.5, 3.0]), dual)", "dual.igamma_(lib.ones(2))",
                                  "lib.igamma(dual, lib.ones(2))"])
def test_forward_mode_is_refused_as_torch(call):
    words = []
    for lib in (torch, ml):
        forward_ad = lib.autograd.forward_ad
        with forward_ad.dual_level():
            dual = forward_ad.make_dual(lib.tensor([1.0, 2.0]), lib.tensor([1.0, 0.5]))  # noqa: F841  (in call)
            with pytest.raises(NotImplementedError) as error:
                eval(call)
            words.append(str(error.value).splitlines()[0])
    assert words[0] == words[1]
