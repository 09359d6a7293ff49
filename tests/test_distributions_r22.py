"""torch.distributions beyond round 8's, side by side with torch (round 22): Gamma, Chi2, Beta,
Dirichlet, StudentT (Marsaglia-Tsang draws: torch's uniform and normal draws, bit for bit, and the
implicit-reparameterization gradients of torch's ``_standard_gamma_grad`` / ``_dirichlet_grad``),
Binomial and Multinomial (torch's inversion / BTRS sampler), NegativeBinomial, Poisson, Geometric, Cauchy,
HalfCauchy, Gumbel, HalfNormal, InverseGamma, Weibull, Pareto, FisherSnedecor, ContinuousBernoulli (its Taylor
branch near 1/2 too), VonMises (its rejection sampler's rounds of draws), Kumaraswamy, RelaxedBernoulli,
RelaxedOneHotCategorical, LogisticNormal, LKJCholesky, Wishart (torch's second round of Bartlett draws and its
"Singular sample detected." warning included), GeneralizedPareto, MixtureSameFamily and
LowRankMultivariateNormal: samples, log_prob / entropy / moments / cdf / icdf, kl_divergence pairs, expand,
shapes and validate_args errors; biject_to / transform_to onto each constraint.

Where a value goes through ``lgamma`` or ``exp`` torch calls MKL's vector math, which is not correctly
rounded (ARCHITECTURE.md: minilora keeps the correctly rounded value), so those are compared to 1e-6
relative; the draws and the gradient kernels are compared bit for bit."""
import warnings

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")


def _seeded(fn):
    """``fn`` run by each library after ``manual_seed(0)``: (torch's result, minilora's result)."""
    torch.manual_seed(0)
    want = fn(torch)
    ml.manual_seed(0)
    got = fn(ml)
    return want, got


def _same(want, got, exact=True, atol=1e-7):
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        w, g = w.detach().numpy(), g.detach().numpy()
        assert w.shape == g.shape and w.dtype == g.dtype
        if exact:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=atol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_standard_gamma_draws_torchs_numbers(dtype):
    """Marsaglia-Tsang on torch's double normals (the cached Box-Muller half included) and uniforms:
    alpha below 1 (the boost), 0, and large; the generator is left where torch leaves it."""
    alphas = [0.3, 0.0, 1.0, 2.5, 0.01, 20.0, 7.0, 0.5]
    want, got = _seeded(lambda T: (T._standard_gamma(T.tensor(alphas, dtype=getattr(T, dtype))), T.randn(3)))
    _same(want, got)


def test_gamma_rsample_gradient_is_implicit_reparameterization():
    """Gamma(concentration, rate).rsample(): torch's draws and torch's d x / d concentration."""
    def run(T):
        c = T.tensor([0.4, 2.0, 9.0], requires_grad=True)
        r = T.tensor([1.0, 3.0, 0.5], requires_grad=True)
        x = T.distributions.Gamma(c, r).rsample((2,))
        (x * T.tensor([1.0, 2.0, 3.0])).sum().backward()
        return x, c.grad, r.grad
    _same(*_seeded(run))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_standard_gamma_grad_every_branch(dtype):
    """Small x (Taylor series), large alpha (Rice's saddle point, near the mean and off it), and
    the rational approximation in between."""
    alpha = [0.3, 2.0, 5.0, 9.0, 9.0, 50.0, 50.0, 1.5, 0.05]
    x = [0.1, 0.5, 2.0, 9.1, 2.0, 40.0, 51.0, 3.0, 1e-4]
    want, got = [T._standard_gamma_grad(T.tensor(alpha, dtype=getattr(T, dtype)), T.tensor(x, dtype=getattr(T, dtype)))
                 for T in (torch, ml)]
    _same(want, got)


def test_dirichlet_and_beta_draw_and_differentiate_as_torch():
    def run(T):
        a = T.tensor([[0.5, 2.0, 9.0], [1.0, 1.0, 1.0]], requires_grad=True)
        x = T.distributions.Dirichlet(a).rsample()
        (x * T.tensor([1.0, 2.0, 3.0])).sum().backward()
        c1 = T.tensor([0.5, 2.0, 9.0], requires_grad=True)
        c0 = T.tensor([1.0, 3.0, 8.0], requires_grad=True)
        b = T.distributions.Beta(c1, c0).rsample((2,))
        b.sum().backward()
        return x, a.grad, b, c1.grad, c0.grad, T.distributions.Beta(2.0, 3.0).sample((3,))
    _same(*_seeded(run))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dirichlet_grad_every_branch(dtype):
    """x near 0 and near 1 (Taylor series, in the tensor's own float type), both concentrations
    large (Rice), and the rational correction."""
    x = [0.01, 0.3, 0.97, 0.5, 0.45, 0.65, 0.2]
    alpha = [0.5, 1.0, 2.0, 20.0, 30.0, 1.7, 3.0]
    total = [1.5, 3.0, 2.5, 45.0, 70.0, 4.1, 19.0]
    want, got = [T._dirichlet_grad(*(T.tensor(v, dtype=getattr(T, dtype)) for v in (x, alpha, total)))
                 for T in (torch, ml)]
    _same(want, got)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binomial_inversion_and_btrs_draws(dtype):
    counts = [5.0, 100.0, 100.0, 40.0, 0.0, 7.0]
    probs = [0.3, 0.3, 0.9, 0.5, 0.5, 1.0]
    want, got = _seeded(lambda T: (T.binomial(T.tensor(counts, dtype=getattr(T, dtype)),
                                              T.tensor(probs, dtype=getattr(T, dtype))), T.rand(2)))
    _same(want, got)


_D = {  # name -> (constructor on the library, parameters, a value in the support)
    "Gamma": (lambda T, a, b: T.distributions.Gamma(a, b), ([0.5, 2.0], [1.0, 3.0]), [0.3, 0.7]),
    "Chi2": (lambda T, a: T.distributions.Chi2(a), ([0.5, 3.0],), [0.3, 2.0]),
    "Beta": (lambda T, a, b: T.distributions.Beta(a, b), ([0.5, 2.0], [1.0, 3.0]), [0.3, 0.7]),
    "Dirichlet": (lambda T, a: T.distributions.Dirichlet(a), ([[0.5, 2.0, 3.0], [1.0, 1.0, 1.0]],),
                  [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]),
    "StudentT": (lambda T, df, loc, s: T.distributions.StudentT(df, loc, s), ([3.0, 0.7], [0.0, 1.0], [1.0, 2.0]),
                 [0.3, -2.0]),
    "Cauchy": (lambda T, loc, s: T.distributions.Cauchy(loc, s), ([0.0, 1.0], [1.0, 2.0]), [0.3, -2.0]),
    "Gumbel": (lambda T, loc, s: T.distributions.Gumbel(loc, s), ([0.0, 1.0], [1.0, 2.0]), [0.3, -2.0]),
    "HalfNormal": (lambda T, s: T.distributions.HalfNormal(s), ([1.0, 2.0],), [0.3, 2.0]),
    "Kumaraswamy": (lambda T, a, b: T.distributions.Kumaraswamy(a, b), ([2.0, 0.7], [1.5, 3.0]), [0.3, 0.8]),
    "RelaxedBernoulli": (lambda T, p: T.distributions.RelaxedBernoulli(T.tensor(0.5), probs=p), ([0.2, 0.7],),
                         [0.3, 0.8]),
    "RelaxedOneHotCategorical": (lambda T, z: T.distributions.RelaxedOneHotCategorical(T.tensor(0.5), logits=z),
                                 ([[0.2, 0.7, -1.0]],), [[0.2, 0.3, 0.5]]),
    "LowRankMultivariateNormal": (lambda T, loc, w, d: T.distributions.LowRankMultivariateNormal(loc, w, d),
                                  ([0.0, 1.0, 2.0], [[1.0, 0.5], [0.2, -1.0], [0.3, 0.3]], [1.0, 2.0, 0.5]),
                                  [0.3, -2.0, 1.0]),
    "Poisson": (lambda T, r: T.distributions.Poisson(r), ([0.5, 4.0, 30.0],), [0.0, 3.0, 20.0]),
    "Geometric": (lambda T, p: T.distributions.Geometric(p), ([0.2, 0.7, 0.05],), [0.0, 3.0, 20.0]),
    "Binomial": (lambda T, p: T.distributions.Binomial(T.tensor([10.0, 100.0, 5.0]), probs=p), ([0.2, 0.7, 0.05],),
                 [0.0, 3.0, 2.0]),
    "Multinomial": (lambda T, p: T.distributions.Multinomial(10, probs=p), ([[0.2, 0.7, 0.1]],), [[2.0, 7.0, 1.0]]),
    "HalfCauchy": (lambda T, s: T.distributions.HalfCauchy(s), ([1.0, 2.0],), [0.3, 2.0]),
    "InverseGamma": (lambda T, a, b: T.distributions.InverseGamma(a, b), ([0.5, 3.0], [1.0, 2.0]), [0.3, 2.0]),
    "Weibull": (lambda T, s, c: T.distributions.Weibull(s, c), ([1.0, 2.0], [0.5, 3.0]), [0.3, 2.0]),
    "Pareto": (lambda T, s, a: T.distributions.Pareto(s, a), ([1.0, 2.0], [0.5, 3.0]), [1.3, 2.5]),
    "FisherSnedecor": (lambda T, a, b: T.distributions.FisherSnedecor(a, b), ([1.0, 6.0], [3.0, 7.0]), [0.3, 2.0]),
    "NegativeBinomial": (lambda T, p: T.distributions.NegativeBinomial(T.tensor([3.0, 10.0]), probs=p), ([0.3, 0.8],),
                         [0.0, 4.0]),
    "ContinuousBernoulli": (lambda T, p: T.distributions.ContinuousBernoulli(probs=p), ([0.2, 0.4995],), [0.1, 0.8]),
    "LogisticNormal": (lambda T, loc, s: T.distributions.LogisticNormal(loc, s), ([0.2, -0.5, 1.0], [1.0, 0.5, 2.0]),
                       [0.2, 0.3, 0.1, 0.4]),
    "VonMises": (lambda T, loc, k: T.distributions.VonMises(loc, k), ([0.5, -2.0, 3.0], [1.0, 0.01, 20.0]),
                 [0.1, 1.0, 2.9]),
    "LKJCholesky": (lambda T, c: T.distributions.LKJCholesky(3, c), ([0.5, 2.0],),
                    [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8]]),
    "Wishart": (lambda T, df: T.distributions.Wishart(df, covariance_matrix=T.tensor([[2.0, 0.3], [0.3, 1.0]])),
                ([4.0, 6.5],), [[1.0, 0.2], [0.2, 2.0]]),
    "GeneralizedPareto": (lambda T, loc, s, c: T.distributions.GeneralizedPareto(loc, s, c),
                          ([0.0, -1.0], [1.0, 0.5], [0.0, -0.2]), [0.5, -0.5]),
    "MixtureSameFamily": (lambda T, w: T.distributions.MixtureSameFamily(
        T.distributions.Categorical(w), T.distributions.Normal(T.tensor([-1.0, 0.0, 2.0]), T.tensor([1.0, 0.5, 2.0]))),
        ([0.2, 0.7, 0.1],), [0.3, -1.0]),
}


def _make(T, name, scale=1.0):
    build, params, _ = _D[name]
    return build(T, *(T.tensor(p) * scale for p in params))


@pytest.fixture(scope="module")
def answers():
    """Every distribution's draws and numbers, per library (one pass each)."""
    def collect(T):
        out = {}
        for name, (_, _, value) in _D.items():
            T.manual_seed(0)
            d = _make(T, name)
            with warnings.catch_warnings(record=True) as caught:  # (Wishart's "Singular sample detected.")
                warnings.simplefilter("always")
                row = {"sample": d.sample((2,)), "expand": d.expand((3,) + tuple(d.batch_shape)).sample()}
            row.update(warned=[str(w.message) for w in caught if w.category is UserWarning],
                       shape=(tuple(d.batch_shape), tuple(d.event_shape)), log_prob=d.log_prob(T.tensor(value)))
            for what in ("mean", "variance", "entropy", "cdf", "icdf"):
                try:
                    row[what] = {"mean": lambda: d.mean, "variance": lambda: d.variance, "entropy": d.entropy,
                                 "cdf": lambda: d.cdf(T.tensor(value)),
                                 "icdf": lambda: d.icdf(T.tensor([0.2, 0.9]))}[what]()
                except NotImplementedError:
                    row[what] = None
            if d.has_rsample:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    row["rsample"] = d.rsample((2,))
            out[name] = row
        return out
    return collect(torch), collect(ml)


# (draws pushed through log / exp / sqrt: torch's MKL vector math is an ulp off the correctly rounded value now and
# then; Wishart's through matrix products, MKL's sgemm order)
_DRAWS_THROUGH_VML = {"Gumbel", "RelaxedOneHotCategorical", "Pareto", "LKJCholesky", "Wishart"}


@pytest.mark.parametrize("name", list(_D))
def test_draws_shapes_and_numbers(answers, name):
    want, got = answers[0][name], answers[1][name]
    assert set(want) == set(got), name
    assert want["shape"] == got["shape"]
    assert want["warned"] == got["warned"]
    for key in ("sample", "expand", "rsample"):
        if key in want:
            _same(want[key], got[key], exact=name not in _DRAWS_THROUGH_VML)
    for key in ("log_prob", "mean", "variance", "entropy", "cdf", "icdf"):
        assert (want[key] is None) == (got[key] is None), key
        if want[key] is not None:
            _same(want[key], got[key], exact=False)


_KL_PAIRS = [("Gamma", "Gamma"), ("Beta", "Beta"), ("Dirichlet", "Dirichlet"), ("Cauchy", "Cauchy"),
             ("Gumbel", "Gumbel"), ("HalfNormal", "HalfNormal"), ("Poisson", "Poisson"), ("Geometric", "Geometric"),
             ("Binomial", "Binomial"), ("LowRankMultivariateNormal", "LowRankMultivariateNormal"),
             ("Gamma", "Gumbel"), ("Beta", "Gamma"), ("Pareto", "Pareto"), ("Pareto", "Gamma"),
             ("HalfCauchy", "HalfCauchy"), ("ContinuousBernoulli", "ContinuousBernoulli"),
             ("Beta", "ContinuousBernoulli")]


@pytest.mark.parametrize("p,q", _KL_PAIRS)
def test_kl_divergence_pairs(p, q):
    want, got = [T.distributions.kl_divergence(_make(T, p), _make(T, q, scale=0.9)) for T in (torch, ml)]
    _same(want, got, exact=False, atol=1e-6)  # (a difference of two logs near 0: VML's last bit of each)


def test_kl_across_families_and_to_infinity():
    def run(T):
        D = T.distributions
        n, g = D.Normal(T.tensor([0.0, 1.0]), T.tensor([1.0, 2.0])), D.Gamma(T.tensor([2.0, 3.0]), T.tensor([1.0, 0.5]))
        e, b = D.Exponential(T.tensor([1.0, 2.0])), D.Beta(T.tensor([2.0, 3.0]), T.tensor([1.0, 0.5]))
        u = D.Uniform(T.tensor([0.1, 0.2]), T.tensor([0.5, 0.9]))
        return (D.kl_divergence(g, n), D.kl_divergence(e, g), D.kl_divergence(g, e), D.kl_divergence(b, n),
                D.kl_divergence(u, b), D.kl_divergence(u, g), D.kl_divergence(n, g), D.kl_divergence(g, b))
    _same(*_seeded(run), exact=False)


def _error(fn):
    try:
        fn()
    except (ValueError, NotImplementedError) as e:
        return type(e).__name__, str(e).replace("torch.Size", "Size").replace("minilora.Size", "Size")
    return None


@pytest.mark.parametrize("case", [
    lambda T: T.distributions.Gamma(T.tensor([-1.0]), T.tensor([1.0])),
    lambda T: T.distributions.Gamma(1.0, 1.0).log_prob(T.tensor([-1.0])),
    lambda T: T.distributions.Beta(T.tensor([0.5]), T.tensor([0.0])),
    lambda T: T.distributions.Dirichlet(T.tensor(1.0)),
    lambda T: T.distributions.Geometric(T.tensor([0.0, 0.5])),
    lambda T: T.distributions.Poisson(T.tensor([1.0])).log_prob(T.tensor([0.5])),
    lambda T: T.distributions.Multinomial(T.tensor(3), probs=T.tensor([0.5, 0.5])),
    lambda T: T.distributions.StudentT(T.tensor([-2.0])),
])
def test_validate_args_errors_are_torchs(case):
    want, got = _error(lambda: case(torch)), _error(lambda: case(ml))
    assert want is not None and got == want


@pytest.mark.parametrize("case", [
    lambda T: T._standard_gamma(T.ones(2, dtype=T.float16)),
    lambda T: T._standard_gamma(T.ones(2, dtype=T.int64)),
    lambda T: T._sample_dirichlet(T.ones(2, dtype=T.bfloat16)),
    lambda T: T.binomial(T.ones(2), T.ones(3) * 0.5),
    lambda T: T.binomial(T.ones(2), T.ones(2, dtype=T.float64) * 0.5),
    lambda T: T._standard_gamma_grad(T.ones(2), T.ones(2, dtype=T.float64)),
    lambda T: T._dirichlet_grad(T.ones(2), T.ones(2), T.ones(2, dtype=T.float64)),
    lambda T: T._sample_dirichlet(T.ones(2, device="meta")),
    lambda T: T.binomial(T.ones(2, device="meta"), T.ones(2, device="meta")),
])
def test_sampling_kernels_refuse_as_aten(case):
    """The kernels' dtype dispatch (float and double only, one dtype), shape errors and meta refusals, in
    ATen's words."""
    outcomes = []
    for T in (torch, ml):
        with pytest.raises((RuntimeError, NotImplementedError)) as caught:
            case(T)
        outcomes.append((type(caught.value), str(caught.value)))
    assert outcomes[1] == outcomes[0]


_CONSTRAINTS = {  # name -> (the constraint on the library, an unconstrained value)
    "positive": (lambda C: C.positive, [0.3, -2.0]), "nonnegative": (lambda C: C.nonnegative, [0.3, -2.0]),
    "greater_than": (lambda C: C.greater_than(3.0), [0.3, -2.0]),
    "less_than": (lambda C: C.less_than(-1.0), [0.3, 2.0]),
    "unit_interval": (lambda C: C.unit_interval, [0.3, -2.0]),
    "interval": (lambda C: C.interval(-2.0, 5.0), [0.3, -2.0]),
    "real": (lambda C: C.real, [0.3, -2.0]), "simplex": (lambda C: C.simplex, [[0.3, -2.0, 1.0]]),
    "independent": (lambda C: C.independent(C.positive, 1), [[0.3, -2.0]]),
    "lower_cholesky": (lambda C: C.lower_cholesky, [[0.3, -2.0], [1.0, 0.5]]),
    "positive_definite": (lambda C: C.positive_definite, [[0.3, -2.0], [1.0, 0.5]]),
    "corr_cholesky": (lambda C: C.corr_cholesky, [[0.3, -1.2, 0.5], [2.0, 0.1, -0.4]]),
    "positive_semidefinite": (lambda C: C.positive_semidefinite, [[0.3, -2.0], [1.0, 0.5]]),
    "cat": (lambda C: C.cat([C.positive, C.real, C.unit_interval], dim=-1, lengths=[1, 2, 1]), [[0.3, -1.2, 0.5, 2.0]]),
    "stack": (lambda C: C.stack([C.positive, C.interval(-1.0, 1.0)], dim=-1), [[0.3, -1.2], [2.0, 0.1]]),
}


@pytest.mark.parametrize("registry", ["biject_to", "transform_to"])
@pytest.mark.parametrize("name", list(_CONSTRAINTS))
def test_biject_to_and_transform_to_as_torch(registry, name):
    """The transform onto each constraint (its repr, values, inverse, log |det J| and gradient), or torch's
    NotImplementedError where torch registers none (biject_to of lower_cholesky, positive_definite)."""
    def run(T):
        constraint, x = _CONSTRAINTS[name]
        try:
            transform = getattr(T.distributions, registry)(constraint(T.distributions.constraints))
        except NotImplementedError as e:
            return str(e)
        x = T.tensor(x, dtype=T.float64, requires_grad=True)
        y = transform(x)
        y.sum().backward()
        out = [repr(transform), y.detach().numpy(), transform.inv(y).detach().numpy(), x.grad.numpy()]
        if transform.bijective:
            out.append(transform.log_abs_det_jacobian(x, y).detach().numpy())
        return out
    want, got = run(torch), run(ml)
    if isinstance(want, str):
        assert got == want
        return
    assert got[0] == want[0]
    for w, g in zip(want[1:], got[1:]):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15)


def test_standard_gamma_on_meta_and_emu_tensors():
    """A meta alpha gives a meta result of its shape (torch's meta kernel; nothing drawn); the emulated
    device draws torch's CPU numbers and differentiates there."""
    alpha = ml.tensor([2.0, 0.5], device="meta", requires_grad=True)
    x = ml.distributions.Gamma(alpha, 1.0, validate_args=False).rsample((3,))
    assert (x.device.type, tuple(x.shape), x.requires_grad) == ("meta", (3, 2), True)
    torch.manual_seed(0)
    want = torch._standard_gamma(torch.tensor([2.0, 0.5]))
    ml.manual_seed(0)
    alpha = ml.tensor([2.0, 0.5], device="emu", requires_grad=True)
    got = ml._standard_gamma(alpha)
    got.sum().backward()
    assert got.device.type == alpha.grad.device.type == "emu"
    np.testing.assert_array_equal(got.detach().cpu().numpy(), want.numpy())


def test_reshape_and_cumulative_distribution_transforms_as_torch():
    def run(T):
        D = T.distributions
        reshape = D.ReshapeTransform((4,), (2, 2))
        T.manual_seed(0)
        td = D.TransformedDistribution(D.Independent(D.Normal(T.zeros(4), T.ones(4)), 1), [reshape])
        x = td.sample((3,))
        cdf = D.CumulativeDistributionTransform(D.Normal(0.0, 2.0))
        z = T.tensor([0.3, -1.0])
        return (x, td.log_prob(x), T.tensor(list(td.event_shape)), T.tensor(list(reshape.inverse_shape((3, 2, 2)))),
                cdf(z), cdf.inv(cdf(z)), cdf.log_abs_det_jacobian(z, cdf(z)))
    want, got = _seeded(run)
    _same(want, got, exact=False)


@pytest.mark.parametrize("op", ["_sample_dirichlet", "_dirichlet_grad", "binomial", "_standard_gamma_grad"])
def test_kernels_without_derivatives_refuse_backward_as_torch(op):
    """torch records these with a node whose backward is not implemented: a gradient through them is its error,
    never a silent zero."""
    def run(T):
        a = T.tensor([2.0, 3.0], requires_grad=True)
        call = {"_sample_dirichlet": lambda: T._sample_dirichlet(a),
                "_dirichlet_grad": lambda: T._dirichlet_grad(a, a.detach(), a.detach() * 2),
                "binomial": lambda: T.binomial(a, a.detach() * 0 + 0.5),
                "_standard_gamma_grad": lambda: T._standard_gamma_grad(a, a.detach())}[op]
        out = call()
        with pytest.raises((RuntimeError, NotImplementedError)) as caught:
            out.sum().backward()
        return out.grad_fn.name(), type(caught.value), str(caught.value)
    assert run(ml) == run(torch)
