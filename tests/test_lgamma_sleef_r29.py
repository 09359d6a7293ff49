"""torch.lgamma bit for bit (round 29): torch's CPU kernel of float32 and float64 is SLEEF's vectorized
lgamma (``Sleef_lgammaf16_u10`` / ``Sleef_lgammad8_u10``), 16-bit inputs through the float32 one. math.lgamma
rounded once was an ulp off it in 1.8% of float32 elements and 0.8% of float64 ones, and the distributions'
log_prob (Gamma, Beta, Poisson, StudentT, Dirichlet ...), mvlgamma and igamma's gradient inherited it.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import minilora as ml  # noqa: E402
import minilora.distributions as md  # noqa: E402
from minilora import float32_math  # noqa: E402

pytestmark = pytest.mark.skipif(float32_math.CPU_CAPABILITY == "default",
                                reason="torch's default build computes lgamma by C's scalar lgamma")

UNSIGNED = {"float32": np.uint32, "float64": np.uint64}
EDGES = [0.0, -0.0, 1.0, 2.0, -1.0, -2.0, 0.5, -0.5, 1.1, 1.2, 2.3, 7.0, 1e-30, -1e-30, 1e-31, 1e-306, -1e-306,
         5e-324, -5e-324, 1e-45, -1e-45, np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, 2.0 ** 23, -2.0 ** 23 - 2,
         8388607.5, -8388607.5, 4097.5, -4097.5, 2.0 ** 28 + 0.5, -2.0 ** 28 - 0.5, -2.0 ** 52 + 0.5, 1e300,
         2.5e305, -1e300, 1.7976931348623157e308]


def differing(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    return int(((ours != theirs) & ~(np.isnan(ours) & np.isnan(theirs))).sum())


def samples(dtype, n=1 << 17, seed=0):
    """random bit patterns (every float, NaN, inf and subnormal among them), randn * 5, uniform on [-10, 10], the
    edges."""
    rng = np.random.default_rng(seed)
    unsigned = UNSIGNED[dtype]
    bits = rng.integers(0, np.iinfo(unsigned).max, n, dtype=unsigned, endpoint=True).view(dtype)
    with np.errstate(over="ignore"):
        edges = np.array(EDGES, dtype)
    return np.concatenate([bits, (rng.standard_normal(n) * 5).astype(dtype), rng.uniform(-10, 10, n).astype(dtype),
                           edges])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lgamma_is_torchs_sleef_lgamma_bit_for_bit(dtype):
    x = samples(dtype)
    assert differing(ml.lgamma(ml.tensor(x)).numpy(), torch.lgamma(torch.from_numpy(x)).numpy()) == 0
    strided = x[: 4000].reshape(40, 100).T  # (torch's strided loop: the same bits)
    assert differing(ml.tensor(strided).lgamma().numpy(), torch.from_numpy(strided).lgamma().numpy()) == 0
    scalar = ml.tensor(x[-3]).lgamma()  # (a 0-d tensor stays 0-d)
    assert scalar.shape == () and differing(scalar.numpy(), torch.tensor(x[-3]).lgamma().numpy()) == 0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_sixteen_bit_lgamma_of_every_value_is_torchs(dtype):
    every = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(getattr(torch, dtype))
    ours = ml.lgamma(ml.tensor(every.float().numpy()).to(getattr(ml, dtype)))
    assert differing(ours.float().numpy(), torch.lgamma(every).float().numpy()) == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lgamma_gradient_is_digamma_and_mvlgamma_inherits_the_values(dtype):
    x = (np.random.default_rng(1).standard_normal(20000) * 5).astype(dtype)
    theirs, ours = torch.tensor(x, requires_grad=True), ml.tensor(x, requires_grad=True)
    torch.lgamma(theirs).sum().backward()
    out = ml.lgamma(ours)
    out.sum().backward()
    assert differing(out.detach().numpy(), torch.lgamma(torch.tensor(x)).numpy()) == 0
    assert differing(ours.grad.numpy(), theirs.grad.numpy()) == 0
    positive = np.abs(x) + 2
    assert differing(ml.mvlgamma(ml.tensor(positive), p=3).numpy(), torch.mvlgamma(torch.tensor(positive), p=3)) == 0


DISTRIBUTIONS = [(name, dtype) for name in ["Gamma", "Beta", "Poisson", "StudentT", "Dirichlet"]
                 for dtype in ["float32", "float64"]
                 if (name, dtype) != ("Poisson", "float32")]  # (float32 lgamma of whole numbers: the same before)


@pytest.mark.parametrize("name,dtype", DISTRIBUTIONS)
def test_distributions_log_prob_is_torchs(name, dtype):
    rng = np.random.default_rng(2)
    a = (np.abs(rng.standard_normal(4000)) * 5 + 0.1).astype(dtype)
    y = (np.abs(rng.standard_normal(4000)) * 3).astype(dtype)
    parameters, value = {"Gamma": ((a, a + 1), y + 0.1), "Beta": ((a, a + 1), np.clip(y / 10, 0.01, 0.99)),
                         "Poisson": ((a,), np.floor(y * 30)), "StudentT": ((a,), y - 1),
                         "Dirichlet": ((a.reshape(-1, 4),), None)}[name]
    theirs = getattr(torch.distributions, name)(*(torch.tensor(p) for p in parameters))
    ours = getattr(md, name)(*(ml.tensor(p) for p in parameters))
    value = theirs.sample().numpy() if value is None else value.astype(dtype)
    assert differing(ours.log_prob(ml.tensor(value)).numpy(), theirs.log_prob(torch.tensor(value)).numpy()) == 0


def test_igamma_gradient_takes_torchs_lgamma():
    rng = np.random.default_rng(3)
    a = (np.abs(rng.standard_normal(20000)) * 5 + 0.1).astype(np.float32)
    x = (np.abs(rng.standard_normal(20000)) * 3).astype(np.float32)
    theirs, ours = torch.tensor(x, requires_grad=True), ml.tensor(x, requires_grad=True)
    torch.igamma(torch.tensor(a), theirs).sum().backward()
    ml.igamma(ml.tensor(a), ours).sum().backward()
    assert differing(ours.grad.numpy(), theirs.grad.numpy()) == 0
