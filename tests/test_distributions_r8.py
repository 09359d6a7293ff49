"""torch.distributions side by side with torch (round 8): the same seeded program draws the same
numbers (Normal.sample/rsample, Categorical.sample, Bernoulli, Uniform, Exponential, Laplace,
MultivariateNormal, OneHotCategorical, Independent, LogNormal and TransformedDistributions), log_prob /
entropy / moments / cdf / icdf and their gradients agree in float64, kl_divergence for every pair torch
registers among them, validate_args refuses what torch refuses with torch's ValueError message, and the
REINFORCE and VAE tutorial steps give torch's actions, losses and gradients."""
import math

import numpy as np
import pytest

import minilora as ml
import minilora.distributions as MD

torch = pytest.importorskip("torch")
TD = torch.distributions


def _np(t):
    return t.detach().numpy()


def _close(got, want, exact=False):
    assert tuple(got.shape) == tuple(want.shape)
    assert str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]
    if exact:
        np.testing.assert_array_equal(_np(got), _np(want))
    else:
        np.testing.assert_allclose(_np(got), _np(want), rtol=1e-10, atol=1e-12)


def _params(T, dtype, rng_seed=0):
    """The same parameters for both libraries (float64 leaves when dtype is float64)."""
    rng = np.random.RandomState(rng_seed)
    dt = getattr(T, dtype)

    def leaf(a):
        return T.tensor(np.asarray(a), dtype=dt, requires_grad=dtype == "float64")
    A = rng.randn(2, 3, 3)
    cov = A @ A.transpose(0, 2, 1) + 3 * np.eye(3)
    return dict(loc=leaf(rng.randn(2, 3)), scale=leaf(rng.rand(2, 3) + 0.5), logits=leaf(rng.randn(2, 3, 4)),
                probs=leaf(rng.rand(2, 3) * 0.8 + 0.1), low=leaf(rng.rand(2, 3) - 1), high=leaf(rng.rand(2, 3) + 1),
                rate=leaf(rng.rand(2, 3) + 0.5), mloc=leaf(rng.randn(2, 3)), cov=leaf(cov),
                tril=leaf(np.linalg.cholesky(cov)), prec=leaf(np.linalg.inv(cov)))


# name -> (constructor from (distributions module, params), has_rsample)
CASES = {
    "Normal": lambda D, p: D.Normal(p["loc"], p["scale"]),
    "Normal-scalars": lambda D, p: D.Normal(0.5, 2.0),
    "Normal-mixed": lambda D, p: D.Normal(p["loc"], 2.0),
    "Bernoulli-probs": lambda D, p: D.Bernoulli(probs=p["probs"]),
    "Bernoulli-logits": lambda D, p: D.Bernoulli(logits=p["loc"]),
    "Categorical-logits": lambda D, p: D.Categorical(logits=p["logits"]),
    "Categorical-probs": lambda D, p: D.Categorical(p["logits"].exp()),
    "OneHotCategorical": lambda D, p: D.OneHotCategorical(logits=p["logits"]),
    "Uniform": lambda D, p: D.Uniform(p["low"], p["high"]),
    "Uniform-scalars": lambda D, p: D.Uniform(-1.0, 3.0),
    "Exponential": lambda D, p: D.Exponential(p["rate"]),
    "Laplace": lambda D, p: D.Laplace(p["loc"], p["scale"]),
    "MVN-cov": lambda D, p: D.MultivariateNormal(p["mloc"], covariance_matrix=p["cov"]),
    "MVN-tril": lambda D, p: D.MultivariateNormal(p["mloc"], scale_tril=p["tril"]),
    "MVN-prec": lambda D, p: D.MultivariateNormal(p["mloc"], precision_matrix=p["prec"]),
    "MVN-broadcast-loc": lambda D, p: D.MultivariateNormal(p["mloc"][0], covariance_matrix=p["cov"]),
    "Independent": lambda D, p: D.Independent(D.Normal(p["loc"], p["scale"]), 1),
    "LogNormal": lambda D, p: D.LogNormal(p["loc"], p["scale"]),
    "Tanh-Normal": lambda D, p: D.TransformedDistribution(D.Normal(p["loc"], p["scale"]),
                                                          [D.TanhTransform(cache_size=1)]),
    "Affine-Sigmoid": lambda D, p: D.TransformedDistribution(D.Normal(p["loc"], p["scale"]),
                                                             [D.AffineTransform(p["low"], 2.0), D.SigmoidTransform()]),
    "Softplus-MVN": lambda D, p: D.TransformedDistribution(D.MultivariateNormal(p["mloc"], scale_tril=p["tril"]),
                                                           D.transforms.SoftplusTransform()),
    "Affine-event": lambda D, p: D.TransformedDistribution(D.Normal(p["loc"], p["scale"]),
                                                           D.AffineTransform(p["mloc"], p["rate"], event_dim=1)),
}
# float32 draws that pass through exp/tanh/log1p/sigmoid/softplus or a matmul may differ from torch's SLEEF
# kernels in the last bit; the others are bit for bit
_LAST_BIT = ("MVN", "Laplace", "LogNormal", "Tanh", "Affine-Sigmoid", "Softplus")


def _both(name, dtype="float32"):
    return CASES[name](MD, _params(ml, dtype)), CASES[name](TD, _params(torch, dtype))


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("sample_shape", [(), (5,), [2, 3]])
def test_seeded_samples_are_torchs_numbers(name, sample_shape):
    ours, theirs = _both(name)
    assert ours.batch_shape == theirs.batch_shape and ours.event_shape == theirs.event_shape
    methods = ["sample"] + (["rsample"] if theirs.has_rsample else [])
    for method in methods:
        ml.manual_seed(7)
        torch.manual_seed(7)
        got = getattr(ours, method)(sample_shape)
        want = getattr(theirs, method)(sample_shape)
        exact = not name.startswith(_LAST_BIT)
        assert tuple(got.shape) == tuple(want.shape)
        if exact:
            _close(got, want, exact=True)
        else:
            np.testing.assert_allclose(_np(got), _np(want), rtol=1e-5, atol=1e-6)
        assert got.requires_grad == want.requires_grad


def test_samples_follow_the_stream_one_draw_after_another():
    """Two distributions drawn in turn keep torch's stream position (a REINFORCE episode)."""
    for T, D in ((ml, MD), (torch, TD)):
        T.manual_seed(3)
        logits = T.tensor([[0.1, 2.0, -1.0], [0.3, 0.3, 0.3]])
        noise = D.Normal(T.zeros(4), T.ones(4))
        draws = [D.Categorical(logits=logits).sample() for _ in range(3)] + [noise.sample(), noise.rsample((2,))]
        if D is MD:
            ours = draws
        else:
            for got, want in zip(ours, draws):
                _close(got, want, exact=True)


STATS = ["mean", "variance", "stddev", "mode", "entropy"]


@pytest.mark.parametrize("name", CASES)
def test_log_prob_entropy_moments_and_their_gradients(name):
    p_ours, p_theirs = _params(ml, "float64"), _params(torch, "float64")
    ours, theirs = CASES[name](MD, p_ours), CASES[name](TD, p_theirs)
    torch.manual_seed(1)
    value = theirs.sample((4,))
    mine = ml.tensor(value.numpy())
    results = [(ours.log_prob(mine), theirs.log_prob(value))]
    for stat in STATS:
        try:
            want = getattr(theirs, stat)
            want = want() if callable(want) else want
        except NotImplementedError:
            continue
        got = getattr(ours, stat)
        results.append((got() if callable(got) else got, want))
    for got, want in results:
        np.testing.assert_allclose(_np(got), _np(want), rtol=1e-10, atol=1e-12)
        assert tuple(got.shape) == tuple(want.shape)
    if not any(w.requires_grad for _, w in results):
        return
    loss_ours = sum(g.nan_to_num().sum() for g, _ in results if g.requires_grad)
    loss_theirs = sum(w.nan_to_num().sum() for _, w in results if w.requires_grad)
    leaves = [k for k in p_theirs]
    grads_theirs = torch.autograd.grad(loss_theirs, [p_theirs[k] for k in leaves], allow_unused=True)
    loss_ours.backward()
    for k, want in zip(leaves, grads_theirs):
        got = p_ours[k].grad
        if want is None:
            assert got is None or not np.any(_np(got)), k
        else:
            np.testing.assert_allclose(_np(got), _np(want), rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("name", ["Normal", "Normal-mixed", "Uniform", "Laplace", "MVN-cov", "MVN-prec", "Exponential",
                                  "LogNormal", "Tanh-Normal", "Affine-Sigmoid", "Softplus-MVN", "Affine-event"])
def test_rsample_gradients(name):
    p_ours, p_theirs = _params(ml, "float64"), _params(torch, "float64")
    ml.manual_seed(5)
    torch.manual_seed(5)
    got = CASES[name](MD, p_ours).rsample((3,))
    want = CASES[name](TD, p_theirs).rsample((3,))
    np.testing.assert_allclose(_np(got), _np(want), rtol=1e-12)
    weights = np.random.RandomState(2).randn(*want.shape)
    (got * ml.tensor(weights)).sum().backward()
    leaves = list(p_theirs)
    grads = torch.autograd.grad((want * torch.tensor(weights)).sum(), [p_theirs[k] for k in leaves], allow_unused=True)
    for k, g in zip(leaves, grads):
        if g is not None:
            np.testing.assert_allclose(_np(p_ours[k].grad), _np(g), rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("name", ["Normal", "Uniform", "Exponential", "Laplace"])
def test_cdf_and_icdf_with_gradients(name):
    p_ours, p_theirs = _params(ml, "float64"), _params(torch, "float64")
    ours, theirs = CASES[name](MD, p_ours), CASES[name](TD, p_theirs)
    value = np.random.RandomState(3).rand(4, 2, 3) * 0.9 + 0.05
    got = ours.cdf(ml.tensor(value)).sum() + ours.icdf(ml.tensor(value, requires_grad=True)).sum()
    want = theirs.cdf(torch.tensor(value)).sum() + theirs.icdf(torch.tensor(value)).sum()
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-12)
    leaves = list(p_theirs)
    grads = torch.autograd.grad(want, [p_theirs[k] for k in leaves], allow_unused=True)
    got.backward()
    for k, g in zip(leaves, grads):
        if g is not None:
            np.testing.assert_allclose(_np(p_ours[k].grad), _np(g), rtol=1e-9, atol=1e-12, err_msg=k)


def test_normal_icdf_inverts_the_cdf_to_the_tails():
    """Normal.icdf needs erfinv: float64 to within 2 ulp of torch's from 0 to 1 - 2**-53, its
    gradient, and +-inf / nan outside (-1, 1) as torch."""
    y = np.concatenate([np.linspace(-1, 1, 201), 1 - np.logspace(-16, -1, 20), [1e-300, 5e-9, 1.5, -2.0]])
    probs = (y + 1) / 2
    got = MD.Normal(0.0, 1.0).icdf(ml.tensor(probs))
    want = TD.Normal(0.0, 1.0).icdf(torch.tensor(probs))
    np.testing.assert_allclose(_np(got), _np(want), rtol=5e-15, atol=0)
    x = ml.tensor([-0.9, 0.0, 0.3, 0.999], dtype=ml.float64, requires_grad=True)
    xt = torch.tensor([-0.9, 0.0, 0.3, 0.999], dtype=torch.float64, requires_grad=True)
    MD.utils.erfinv(x).sum().backward()
    torch.erfinv(xt).sum().backward()
    np.testing.assert_allclose(_np(x.grad), _np(xt.grad), rtol=1e-13)
    assert MD.Normal(0.0, 1.0).icdf(ml.tensor([0.25])).dtype == ml.float32
    quantile = MD.Normal(0.0, 1.0).icdf(ml.tensor(0.975))
    assert quantile.shape == () and abs(quantile.item() - 1.959963984540054) < 1e-6


KL_PAIRS = [("Normal", "Normal"), ("Bernoulli-probs", "Bernoulli-logits"), ("Categorical-logits", "Categorical-probs"),
            ("OneHotCategorical", "OneHotCategorical"), ("Uniform", "Uniform"), ("Exponential", "Exponential"),
            ("Laplace", "Laplace"), ("MVN-cov", "MVN-tril"), ("MVN-prec", "MVN-broadcast-loc"),
            ("Independent", "Independent"), ("Exponential", "Normal"), ("Laplace", "Normal"),
            ("Normal", "Laplace"), ("Uniform", "Normal"), ("Uniform", "Exponential"), ("Normal", "Uniform"),
            ("Normal", "Exponential"), ("Laplace", "Uniform"), ("Laplace", "Exponential"), ("Exponential", "Uniform"),
            ("LogNormal", "LogNormal"), ("Tanh-Normal", "Tanh-Normal")]


@pytest.mark.parametrize("p_name, q_name", KL_PAIRS)
def test_kl_divergence(p_name, q_name):
    p_ours, p_theirs = _params(ml, "float64"), _params(torch, "float64")
    q_ours, q_theirs = _params(ml, "float64", 1), _params(torch, "float64", 1)
    got = MD.kl_divergence(CASES[p_name](MD, p_ours), CASES[q_name](MD, q_ours))
    want = TD.kl_divergence(CASES[p_name](TD, p_theirs), CASES[q_name](TD, q_theirs))
    np.testing.assert_allclose(_np(got), _np(want), rtol=1e-10, atol=1e-12)
    assert tuple(got.shape) == tuple(want.shape)
    if not np.isfinite(_np(want)).all():
        return
    leaves = list(p_theirs) + [k + "_q" for k in q_theirs]
    tensors = list(p_theirs.values()) + list(q_theirs.values())
    grads = torch.autograd.grad(want.sum(), tensors, allow_unused=True)
    got.sum().backward()
    mine = list(p_ours.values()) + list(q_ours.values())
    for k, g, t in zip(leaves, grads, mine):
        if g is not None:
            np.testing.assert_allclose(_np(t.grad), _np(g), rtol=1e-9, atol=1e-12, err_msg=k)


def test_kl_between_unregistered_types_is_refused_as_torch_does():
    for D in (MD, TD):
        with pytest.raises(NotImplementedError, match="No KL.*p type Bernoulli and q type Categorical"):
            D.kl_divergence(D.Bernoulli(0.3), D.Categorical(logits=D.Normal(0.0, 1.0).sample((3,))))
        with pytest.raises(NotImplementedError, match="cross KL-divergence between different exponential families"):
            D.kl_divergence(D.Bernoulli(0.3), D.Normal(0.0, 1.0))


def test_kl_of_transformed_distributions_needs_equal_transforms():
    for D, T in ((MD, ml), (TD, torch)):
        p = D.TransformedDistribution(D.Normal(0.0, 1.0), D.AffineTransform(1.0, 2.0))
        q = D.TransformedDistribution(D.Normal(1.0, 1.0), D.AffineTransform(1.0, 3.0))
        with pytest.raises(NotImplementedError):
            D.kl_divergence(p, q)
        same = D.TransformedDistribution(D.Normal(1.0, 1.0), D.AffineTransform(1.0, 2.0))
        assert abs(D.kl_divergence(p, same).item() - 0.5) < 1e-6


def test_register_kl_picks_the_most_specific_pair():
    class Gaussian(MD.Normal):
        pass

    @MD.register_kl(Gaussian, MD.Normal)
    def _constant(p, q):
        return ml.tensor(42.0)
    try:
        assert MD.kl_divergence(Gaussian(0.0, 1.0), MD.Normal(1.0, 2.0)).item() == 42.0
        assert MD.kl_divergence(MD.Normal(0.0, 1.0), Gaussian(1.0, 2.0)).item() != 42.0
    finally:
        del MD.kl._KL_REGISTRY[Gaussian, MD.Normal]
        MD.kl._KL_MEMOIZE.clear()


def _message(call):
    messages = []
    for D, T in ((MD, ml), (TD, torch)):
        with pytest.raises(ValueError) as info:
            call(D, T)
        messages.append(str(info.value).replace("torch.Size", "minilora.Size"))
    return messages


REFUSALS = {
    "negative scale": lambda D, T: D.Normal(T.tensor([0.0, 1.0]), T.tensor([1.0, -1.0])),
    "both probs and logits": lambda D, T: D.Categorical(probs=T.ones(3), logits=T.ones(3)),
    "0-d probs": lambda D, T: D.Categorical(T.tensor(1.0)),
    "probs off the simplex": lambda D, T: D.Categorical(probs=T.tensor([-0.5, 1.5])),
    "probs above one": lambda D, T: D.Bernoulli(probs=T.tensor([0.5, 1.5])),
    "low above high": lambda D, T: D.Uniform(T.tensor([2.0]), T.tensor([1.0])),
    "not a Cholesky factor": lambda D, T: D.MultivariateNormal(T.zeros(2), scale_tril=T.tensor([[1.0, 1.0],
                                                                                             [0.0, 1.0]])),
    "not positive definite": lambda D, T: D.MultivariateNormal(T.zeros(2), covariance_matrix=-T.eye(2)),
    "two matrices": lambda D, T: D.MultivariateNormal(T.zeros(2), T.eye(2), scale_tril=T.eye(2)),
    "0-d loc": lambda D, T: D.MultivariateNormal(T.tensor(0.0), T.eye(2)),
    "1-d covariance": lambda D, T: D.MultivariateNormal(T.zeros(2), T.ones(2)),
    "too many dims": lambda D, T: D.Independent(D.Normal(T.zeros(2), T.ones(2)), 2),
    "action out of range": lambda D, T: D.Categorical(logits=T.zeros(3)).log_prob(T.tensor(3)),
    "not a 0/1 value": lambda D, T: D.Bernoulli(0.5).log_prob(T.tensor(0.5)),
    "value below the Uniform": lambda D, T: D.Uniform(0.0, 1.0).log_prob(T.tensor(-1.0)),
    "event shape": lambda D, T: D.MultivariateNormal(T.zeros(2), T.eye(2)).log_prob(T.zeros(3)),
    "not broadcastable": lambda D, T: D.Normal(T.zeros(3), T.ones(3)).log_prob(T.zeros(2)),
    "not a tensor": lambda D, T: D.Normal(0.0, 1.0).log_prob(0.5),
    "bad type": lambda D, T: D.Normal("0", 1.0),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_validation_errors_read_as_torchs(case):
    ours, theirs = _message(REFUSALS[case])
    assert ours == theirs


def test_validate_args_false_skips_the_checks():
    for D, T in ((MD, ml), (TD, torch)):
        d = D.Normal(T.tensor(0.0), T.tensor(-1.0), validate_args=False)
        assert math.isnan(d.log_prob(T.tensor(0.0)).item())
        assert D.Uniform(0.0, 1.0, validate_args=False).log_prob(T.tensor(2.0)).item() == -math.inf


def test_shapes_expand_and_independent():
    for D, T in ((MD, ml), (TD, torch)):
        base = D.Normal(T.zeros(3), T.ones(3))
        wide = base.expand([4, 3])
        assert tuple(wide.batch_shape) == (4, 3) and tuple(wide.sample((2,)).shape) == (2, 4, 3)
        diag = D.Independent(wide, 1)
        assert (tuple(diag.batch_shape), tuple(diag.event_shape)) == ((4,), (3,))
        assert tuple(diag.log_prob(T.zeros(4, 3)).shape) == (4,)
        cat = D.Categorical(logits=T.zeros(2, 5)).expand((6, 2))
        assert tuple(cat.sample().shape) == (6, 2) and tuple(cat.enumerate_support().shape) == (5, 6, 2)
        mvn = D.MultivariateNormal(T.zeros(2), T.eye(2)).expand((3,))
        assert tuple(mvn.covariance_matrix.shape) == (3, 2, 2) and tuple(mvn.rsample().shape) == (3, 2)
        assert tuple(D.Bernoulli(T.full((2,), 0.5)).enumerate_support().shape) == (2, 2)
        assert tuple(D.OneHotCategorical(T.ones(3)).enumerate_support().shape) == (3, 3)


def test_repr_and_lazy_parameters():
    for D, T in ((MD, ml), (TD, torch)):
        assert repr(D.Normal(0.0, 1.0)) == "Normal(loc: 0.0, scale: 1.0)"
        cat = D.Categorical(logits=T.zeros(4))
        assert "probs" not in cat.__dict__
        np.testing.assert_allclose(np.asarray(cat.probs.tolist()), 0.25)
        assert "probs" in cat.__dict__
        assert repr(D.Bernoulli(probs=T.tensor(0.25))) == "Bernoulli(probs: 0.25)"
        assert repr(D.constraints.positive) == "GreaterThan(lower_bound=0.0)"
        assert repr(D.constraints.real_vector) == "IndependentConstraint(Real(), 1)"


def test_reinforce_step_matches_torch():
    """The policy-gradient update of the REINFORCE tutorial: sample actions, score them, step."""
    weights = np.random.RandomState(4).randn(4, 3).astype(np.float32)
    states = np.random.RandomState(5).randn(6, 4).astype(np.float32)
    results = []
    for T, D in ((ml, MD), (torch, TD)):
        T.manual_seed(11)
        policy = T.nn.Linear(4, 3)
        with T.no_grad():
            policy.weight.copy_(T.tensor(weights.T))
            policy.bias.zero_()
        dist = D.Categorical(logits=policy(T.tensor(states)))
        actions = dist.sample()
        returns = T.arange(6, dtype=T.float32)
        loss = -(dist.log_prob(actions) * returns).mean() - 0.01 * dist.entropy().mean()
        loss.backward()
        results.append((actions.numpy(), loss.item(), policy.weight.grad.numpy()))
    (a1, l1, g1), (a2, l2, g2) = results
    np.testing.assert_array_equal(a1, a2)
    assert abs(l1 - l2) < 1e-6
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-6)


def test_transforms_cache_inverse_and_repr():
    """SAC's squashed Gaussian: with cache_size=1 the inverse of a saturated tanh sample is the
    pre-tanh draw itself (no atanh(1) = inf), so log_prob stays finite, as torch's."""
    for D, T in ((MD, ml), (TD, torch)):
        T.manual_seed(0)
        squash = D.TanhTransform(cache_size=1)
        dist = D.TransformedDistribution(D.Normal(T.tensor([30.0]), T.tensor([1.0])), [squash])
        action = dist.rsample()
        assert action.item() == 1.0 and math.isfinite(dist.log_prob(action).item())
        x = T.tensor([0.5])
        assert squash.inv(squash(x)) is x
        assert D.ExpTransform() == D.ExpTransform() and D.ExpTransform() != D.TanhTransform()
        assert D.AffineTransform(1.0, -2.0).sign == -1 and D.ExpTransform().inv.sign == 1
        composed = D.ComposeTransform([D.ExpTransform(), D.AffineTransform(0.0, 2.0)])
        assert repr(composed) == "ComposeTransform(\n    ExpTransform(),\n    AffineTransform()\n)"
        assert repr(D.ExpTransform().inv) == "_InverseTransform(ExpTransform())"
        assert repr(composed.codomain) == "Real()"
        assert repr(D.LogNormal(0.0, 1.0).support) == "GreaterThan(lower_bound=0.0)"
        np.testing.assert_allclose(composed(T.tensor([0.0, 1.0])).tolist(), [2.0, 2 * math.e], rtol=1e-6)
        np.testing.assert_allclose(composed.log_abs_det_jacobian(T.tensor([1.0]), T.tensor([2 * math.e])).tolist(),
                                   [1.0 + math.log(2.0)], rtol=1e-6)


def test_lognormal_cdf_icdf_and_refusals():
    results = []
    for D, T in ((MD, ml), (TD, torch)):
        d = D.LogNormal(T.tensor([0.0, 1.0], dtype=T.float64), T.tensor([1.0, 0.5], dtype=T.float64))
        results.append([d.cdf(T.tensor([0.5, 3.0], dtype=T.float64)).tolist(),
                        d.icdf(T.tensor([0.25, 0.9], dtype=T.float64)).tolist(), repr(d)])
        with pytest.raises(ValueError, match="to be within the support"):
            d.log_prob(T.tensor([-1.0, 1.0], dtype=T.float64))
        with pytest.raises(ValueError, match="transforms must be a Transform or list"):
            D.TransformedDistribution(d, "exp")
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12)
    assert results[0][2] == results[1][2] == "LogNormal()"


def test_vae_step_matches_torch():
    """A VAE's loss as the tutorials write it: an encoder's (mu, log_var), z = Normal(mu, std).rsample(),
    a Bernoulli decoder likelihood and kl_divergence to N(0, 1), then backward."""
    rng = np.random.RandomState(6)
    w_enc, w_dec = rng.randn(8, 4).astype(np.float32) * 0.3, rng.randn(2, 8).astype(np.float32) * 0.3
    images = (rng.rand(5, 8) > 0.5).astype(np.float32)
    results = []
    for T, D in ((ml, MD), (torch, TD)):
        T.manual_seed(21)
        enc = T.tensor(w_enc, requires_grad=True)
        dec = T.tensor(w_dec, requires_grad=True)
        x = T.tensor(images)
        mu, log_var = (x @ enc).chunk(2, dim=-1)
        posterior = D.Normal(mu, T.exp(0.5 * log_var))
        z = posterior.rsample()
        likelihood = D.Independent(D.Bernoulli(logits=z @ dec), 1)
        kl = D.kl_divergence(posterior, D.Normal(T.zeros_like(mu), T.ones_like(mu))).sum(-1)
        loss = (kl - likelihood.log_prob(x)).mean()
        loss.backward()
        results.append((z.detach().numpy(), loss.item(), enc.grad.numpy(), dec.grad.numpy()))
    (z1, l1, e1, d1), (z2, l2, e2, d2) = results
    np.testing.assert_allclose(z1, z2, rtol=1e-5, atol=1e-6)
    assert abs(l1 - l2) < 1e-5
    np.testing.assert_allclose(e1, e2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(d1, d2, rtol=1e-4, atol=1e-6)


def test_set_default_validate_args():
    for D, T in ((MD, ml), (TD, torch)):
        D.Distribution.set_default_validate_args(False)
        try:
            assert D.Normal(T.tensor(0.0), T.tensor(-1.0)).scale.item() == -1.0
        finally:
            D.Distribution.set_default_validate_args(True)
        with pytest.raises(ValueError, match="constraint GreaterThan"):
            D.Normal(T.tensor(0.0), T.tensor(-1.0))
