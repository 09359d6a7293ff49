"""Complex tensors as torch takes them: every call below runs on torch and on minilora with the same
complex64 / complex128 inputs, and both must compute the same numbers or refuse with the same error
(type and message). The most important part is the refusals: a kernel torch has no complex version of
(erfc, lgamma, i0, searchsorted, ...) must not answer NumPy's result on the real parts."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402

VALUES = np.array([0.3 + 0.4j, -1.2 + 0.7j, 0.8 - 1.1j, -0.5 - 0.2j, 1.5 + 0.1j, -0.1 + 0.9j])


def _inputs(lib, dtype_name, requires_grad=False):
    z = lib.tensor(VALUES, dtype=getattr(lib, "complex128")).to(getattr(lib, dtype_name))
    z.requires_grad_(requires_grad)
    return z, z.reshape(2, 3)


def _outcome(lib, call, dtype_name, requires_grad=False):
    functional = torch.nn.functional if lib is torch else ml.nn.functional
    z, m = _inputs(lib, dtype_name, requires_grad)
    try:
        return "ok", call(lib, functional, z, m)
    except Exception as error:  # noqa: BLE001 -- the error itself is what is compared
        return type(error).__name__, str(error).splitlines()[0]


def _numpy(value):
    if isinstance(value, (tuple, list)):
        return [_numpy(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().resolve_conj().resolve_neg().numpy()
    if isinstance(value, ml.Tensor):
        return value.detach().numpy()
    return value


def _check(call, dtype_name, tolerance, requires_grad=False):
    expected = _outcome(torch, call, dtype_name, requires_grad)
    got = _outcome(ml, call, dtype_name, requires_grad)
    if expected[0] != "ok" or got[0] != "ok":
        assert got == expected
        return
    want, have = _numpy(expected[1]), _numpy(got[1])
    if isinstance(want, np.ndarray):
        assert have.dtype == want.dtype and have.shape == want.shape
        np.testing.assert_allclose(have, want, rtol=tolerance, atol=tolerance)
    else:
        assert have == want


# Calls torch refuses for complex inputs (each was computed on the real parts, or otherwise, by minilora).
REFUSED = {
    "erfc": lambda t, F, z, m: t.erfc(z),
    "erfc_method": lambda t, F, z, m: z.erfc(),
    "erfinv": lambda t, F, z, m: t.erfinv(z),
    "lgamma": lambda t, F, z, m: t.lgamma(z),
    "lgamma_method": lambda t, F, z, m: z.lgamma(),
    "digamma": lambda t, F, z, m: t.digamma(z),
    "polygamma0": lambda t, F, z, m: t.polygamma(0, z),
    "polygamma1": lambda t, F, z, m: t.polygamma(1, z),
    "polygamma3": lambda t, F, z, m: t.polygamma(3, z),
    "special_psi": lambda t, F, z, m: t.special.psi(z),
    "special_gammaln": lambda t, F, z, m: t.special.gammaln(z),
    "i0": lambda t, F, z, m: t.i0(z),
    "i0_method": lambda t, F, z, m: z.i0(),
    "i1": lambda t, F, z, m: t.special.i1(z),
    "i0e": lambda t, F, z, m: t.special.i0e(z),
    "i1e": lambda t, F, z, m: t.special.i1e(z),
    "zeta": lambda t, F, z, m: t.special.zeta(z, z),
    "zeta_number_other": lambda t, F, z, m: t.special.zeta(z, 2.0),
    "ndtri": lambda t, F, z, m: t.special.ndtri(z),
    "log_ndtr": lambda t, F, z, m: t.special.log_ndtr(z),
    "xlog1py": lambda t, F, z, m: t.special.xlog1py(z, z),
    "xlog1py_number_other": lambda t, F, z, m: t.special.xlog1py(z, 2.0),
    "modified_bessel_i0": lambda t, F, z, m: t.special.modified_bessel_i0(z),
    "modified_bessel_i1": lambda t, F, z, m: t.special.modified_bessel_i1(z),
    "spherical_bessel_j0": lambda t, F, z, m: t.special.spherical_bessel_j0(z),
    "chebyshev_t": lambda t, F, z, m: t.special.chebyshev_polynomial_t(z, 2),
    "chebyshev_u": lambda t, F, z, m: t.special.chebyshev_polynomial_u(z, n=2),
    "chebyshev_v": lambda t, F, z, m: t.special.chebyshev_polynomial_v(z, 3),
    "chebyshev_w": lambda t, F, z, m: t.special.chebyshev_polynomial_w(z, 3),
    "shifted_chebyshev_t": lambda t, F, z, m: t.special.shifted_chebyshev_polynomial_t(z, 2),
    "hermite_h": lambda t, F, z, m: t.special.hermite_polynomial_h(z, 2),
    "hermite_he": lambda t, F, z, m: t.special.hermite_polynomial_he(z, 2),
    "laguerre_l": lambda t, F, z, m: t.special.laguerre_polynomial_l(z, 2),
    "legendre_p": lambda t, F, z, m: t.special.legendre_polynomial_p(z, 2),
    "entr": lambda t, F, z, m: t.special.entr(z),
    "isin": lambda t, F, z, m: t.isin(z, z),
    "isin_number": lambda t, F, z, m: t.isin(z, 1.0),
    "searchsorted": lambda t, F, z, m: t.searchsorted(z, z),
    "bucketize": lambda t, F, z, m: t.bucketize(z, z),
    "absolute_": lambda t, F, z, m: z.clone().absolute_(),
    "bernoulli_": lambda t, F, z, m: z.clone().bernoulli_(),
    "bernoulli_p_tensor": lambda t, F, z, m: z.clone().bernoulli_(z.real.abs() / 4),
    "bernoulli": lambda t, F, z, m: t.bernoulli(z),
    "kthvalue": lambda t, F, z, m: t.kthvalue(z, 2),
    "kthvalue_method": lambda t, F, z, m: m.kthvalue(1, dim=0),
    "batch_norm": lambda t, F, z, m: F.batch_norm(m, None, None, training=True),
    "instance_norm": lambda t, F, z, m: F.instance_norm(m[None]),
    "scaled_dot_product_attention": lambda t, F, z, m: F.scaled_dot_product_attention(m[None], m[None], m[None]),
    "embedding_bag": lambda t, F, z, m: F.embedding_bag(t.tensor([0, 1]), m, t.tensor([0])),
    "dropout": lambda t, F, z, m: F.dropout(z, 0.5),
    "dropout2d": lambda t, F, z, m: F.dropout2d(m[None, :, :, None], p=0.5),
    "alpha_dropout": lambda t, F, z, m: F.alpha_dropout(z, 0.5, True),
    "feature_alpha_dropout": lambda t, F, z, m: F.feature_alpha_dropout(m[None], 0.5, training=True),
    "scatter_reduce_amax": lambda t, F, z, m: t.scatter_reduce(m, 0, t.zeros(1, 3, dtype=t.int64), m[:1], "amax"),
    "scatter_reduce_amin": lambda t, F, z, m: m.scatter_reduce(0, t.zeros(1, 3, dtype=t.int64), m[:1], reduce="amin"),
    "index_reduce_amax": lambda t, F, z, m: t.index_reduce(m, 0, t.tensor([0]), m[:1], "amax"),
    "index_reduce_amin": lambda t, F, z, m: m.index_reduce(0, t.tensor([0]), m[:1], reduce="amin"),
    "arange": lambda t, F, z, m: t.arange(3, dtype=z.dtype),
    "randint": lambda t, F, z, m: t.randint(0, 3, (2,), dtype=z.dtype),
    "randint_like": lambda t, F, z, m: t.randint_like(z, 3),
    "randperm": lambda t, F, z, m: t.randperm(3, dtype=z.dtype),
    "geometric_": lambda t, F, z, m: z.clone().geometric_(0.5),
    "random_": lambda t, F, z, m: z.clone().random_(),
    "random_to": lambda t, F, z, m: z.clone().random_(3),
}

# Calls both refuse, with torch's words (minilora's own sentences before)
WORDS = {
    "mse_loss": lambda t, F, z, m: F.mse_loss(z, z),
    "smooth_l1_loss": lambda t, F, z, m: F.smooth_l1_loss(z, z, beta=0.5),
    "huber_loss": lambda t, F, z, m: F.huber_loss(z, z),
    "layer_norm": lambda t, F, z, m: F.layer_norm(m, (3,)),
    "group_norm": lambda t, F, z, m: F.group_norm(m[None], 1),
    "gelu": lambda t, F, z, m: F.gelu(z),
    "leaky_relu": lambda t, F, z, m: F.leaky_relu(z, 0.2),
    "rrelu_training": lambda t, F, z, m: F.rrelu(z, training=True),
    "logsigmoid": lambda t, F, z, m: F.logsigmoid(z),
    "mish": lambda t, F, z, m: F.mish(z),
    "elu": lambda t, F, z, m: F.elu(z),
    "selu": lambda t, F, z, m: F.selu(z),
    "softplus": lambda t, F, z, m: F.softplus(z),
    "hardswish": lambda t, F, z, m: F.hardswish(z),
    "glu": lambda t, F, z, m: F.glu(m, 0),
    "nll_loss": lambda t, F, z, m: F.nll_loss(m, t.tensor([0, 1])),
    "cross_entropy": lambda t, F, z, m: F.cross_entropy(m, t.tensor([0, 1])),
    "cross_entropy_3d": lambda t, F, z, m: F.cross_entropy(m[None], t.tensor([[0, 1, 0]])),
    "binary_cross_entropy_with_logits": lambda t, F, z, m: F.binary_cross_entropy_with_logits(z, z),
    "softmax": lambda t, F, z, m: F.softmax(m, dim=1),
    "softmax_dim0": lambda t, F, z, m: t.softmax(m, 0),
    "log_softmax": lambda t, F, z, m: F.log_softmax(m, -1),
    "log_softmax_dim0": lambda t, F, z, m: m.log_softmax(dim=0),
    "softshrink": lambda t, F, z, m: F.softshrink(z),
    "hardshrink": lambda t, F, z, m: F.hardshrink(z),
    "hardsigmoid": lambda t, F, z, m: F.hardsigmoid(z),
    "relu": lambda t, F, z, m: F.relu(z),
    "erf": lambda t, F, z, m: t.erf(z),
    "xlogy": lambda t, F, z, m: t.xlogy(z, z),
    "logit": lambda t, F, z, m: t.logit(z),
    "atan2": lambda t, F, z, m: t.atan2(z, z),
    "maximum": lambda t, F, z, m: t.maximum(z, z),
    "minimum": lambda t, F, z, m: z.minimum(z),
    "floor": lambda t, F, z, m: t.floor(z),
    "trunc": lambda t, F, z, m: z.trunc(),
    "round": lambda t, F, z, m: t.round(z),
    "remainder": lambda t, F, z, m: t.remainder(z, 2),
    "fmod": lambda t, F, z, m: t.fmod(z, 2),
    "floor_divide": lambda t, F, z, m: t.floor_divide(z, 2),
    "div_trunc": lambda t, F, z, m: t.div(z, 2, rounding_mode="trunc"),
    "argmax": lambda t, F, z, m: t.argmax(z),
    "sort": lambda t, F, z, m: t.sort(z),
    "argsort": lambda t, F, z, m: z.argsort(),
    "median": lambda t, F, z, m: t.median(z),
    "topk": lambda t, F, z, m: t.topk(z, 2),
    "fmin": lambda t, F, z, m: t.fmin(z, z),
    "fmax": lambda t, F, z, m: z.fmax(other=z),
    "signbit": lambda t, F, z, m: t.signbit(z),
    "isposinf": lambda t, F, z, m: t.isposinf(z),
    "isneginf": lambda t, F, z, m: z.isneginf(),
    "kl_div": lambda t, F, z, m: F.kl_div(z, z, reduction="sum"),
    "nanmean": lambda t, F, z, m: t.nanmean(z),
    "hardtanh": lambda t, F, z, m: F.hardtanh(z),
    "relu6": lambda t, F, z, m: F.relu6(z),
    "threshold": lambda t, F, z, m: F.threshold(z, 0.5, 0.0),
    "prelu": lambda t, F, z, m: F.prelu(z, t.ones(1, dtype=z.dtype)),
    "max_all": lambda t, F, z, m: t.max(z),
    "min_all": lambda t, F, z, m: m.min(),
    "max_dim": lambda t, F, z, m: t.max(m, 0),
    "min_dim": lambda t, F, z, m: m.min(dim=1),
    "amax": lambda t, F, z, m: t.amax(m, 0),
    "amin": lambda t, F, z, m: m.amin(),
    "aminmax": lambda t, F, z, m: t.aminmax(z),
    "aminmax_dim": lambda t, F, z, m: m.aminmax(dim=0),
    "median_dim": lambda t, F, z, m: t.median(m, 0),
    "int": lambda t, F, z, m: int(z[0]),
    "float": lambda t, F, z, m: float(z[1]),
    "histc": lambda t, F, z, m: t.histc(z),
}

# Calls torch computes for complex inputs.
COMPUTED = {
    "type": lambda t, F, z, m: z.type(),
    "typename": lambda t, F, z, m: t.typename(z),
    "is_signed": lambda t, F, z, m: z.is_signed(),
    "logaddexp": lambda t, F, z, m: t.logaddexp(z, z.flip(0)),
    "logaddexp_method": lambda t, F, z, m: z.logaddexp(other=z * 2),
    "logcumsumexp": lambda t, F, z, m: t.logcumsumexp(m, 1),
    "logcumsumexp_keyword": lambda t, F, z, m: m.logcumsumexp(dim=0),
    "renorm": lambda t, F, z, m: t.renorm(m, 2, 0, 1.0),
    "renorm_keyword": lambda t, F, z, m: m.renorm(p=1, dim=1, maxnorm=0.5),
    "rms_norm": lambda t, F, z, m: F.rms_norm(m, (3,)),
    "rms_norm_weight": lambda t, F, z, m: F.rms_norm(m, [3], weight=z[:3], eps=1e-6),
    "rms_norm_real_weight": lambda t, F, z, m: F.rms_norm(m, (3,), z[:3].real, 1e-3),
    "RMSNorm_module": lambda t, F, z, m: t.nn.RMSNorm(3)(m),
    "silu": lambda t, F, z, m: F.silu(z),
    "silu_inplace": lambda t, F, z, m: F.silu(m.clone(), inplace=True),
    "SiLU_module": lambda t, F, z, m: t.nn.SiLU()(m),
    "sgn_": lambda t, F, z, m: z.clone().sgn_(),
    "int_of_real_complex": lambda t, F, z, m: int(z[4].real.to(z.dtype) * 3),
    "float_of_real_complex": lambda t, F, z, m: float(z[0].real.to(z.dtype)),
}


# Calls torch computes for complex inputs, but refuses to record for backward ("... does not support automatic
# differentiation for outputs with complex dtype"); in-place nan_to_num_ it differentiates.
WITHOUT_COMPLEX_GRADIENT = {
    "nan_to_num": lambda t, F, z, m: t.nan_to_num(z / 0),
    "nan_to_num_method": lambda t, F, z, m: (m * t.tensor([[float("nan")], [float("inf")]])).nan_to_num(1.0, 2.0, -3.0),
    "slice_copy": lambda t, F, z, m: t.slice_copy(m, 1, 0, 2),
    "select_copy": lambda t, F, z, m: t.select_copy(m, 0, 1),
    "slice_scatter": lambda t, F, z, m: t.slice_scatter(m, m[:1].detach(), 0, 0, 1),
    "select_scatter": lambda t, F, z, m: t.select_scatter(m, m[0].detach(), 0, 1),
    "scatter_reduce": lambda t, F, z, m: m.scatter_reduce(0, t.zeros(2, 3, dtype=t.int64), m, "sum"),
    "embedding": lambda t, F, z, m: F.embedding(t.tensor([1, 0]), m),
    "bilinear": lambda t, F, z, m: F.bilinear(m, m, m.detach().reshape(2, 3, 1).expand(2, 3, 3)),
    "soft_margin_loss": lambda t, F, z, m: F.soft_margin_loss(m, t.ones(2, 3)),
    "silu": lambda t, F, z, m: F.silu(m),
}


@pytest.mark.parametrize("name", sorted(WITHOUT_COMPLEX_GRADIENT))
def test_without_complex_gradient_as_torch(name):
    _check(WITHOUT_COMPLEX_GRADIENT[name], "complex128", 1e-12, requires_grad=True)


@pytest.mark.parametrize("dtype_name", ["complex64", "complex128"])
@pytest.mark.parametrize("name", ["nan_to_num", "nan_to_num_method"])
def test_nan_to_num_replaces_each_part_as_torch(name, dtype_name):  # (it returned the input unchanged)
    _check(WITHOUT_COMPLEX_GRADIENT[name], dtype_name, 0)


@pytest.mark.parametrize("dtype_name", ["int64", "uint8"])
@pytest.mark.parametrize("name", ["embedding_bag", "dropout", "dropout2d"])
def test_integer_refusals_as_torch(name, dtype_name):  # (an integer bag table computed; dropout's words were minilora's)
    def call(t, F, z, m):
        return REFUSED[name](t, F, z.real.to(getattr(t, dtype_name)), m.real.to(getattr(t, dtype_name)))
    _check(call, "complex128", 0)


def test_nan_to_num_in_place_gradient_as_torch():
    def call(lib, z):
        out = z * 1
        out[0, 0] = complex(float("nan"), float("inf"))
        return out.nan_to_num_(nan=2.0)
    want = _gradient(torch, call).resolve_conj().numpy()
    np.testing.assert_allclose(_gradient(ml, call).numpy(), want, rtol=1e-12, atol=1e-12)
    z = torch.tensor(VALUES, dtype=torch.complex128).reshape(2, 3)
    np.testing.assert_array_equal(call(ml, ml.tensor(z.numpy())).numpy(), call(torch, z).numpy())


@pytest.mark.parametrize("dtype_name", ["complex64", "complex128"])
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_as_torch(name, dtype_name):
    _check(REFUSED[name], dtype_name, 0)


@pytest.mark.parametrize("dtype_name", ["complex64", "complex128"])
@pytest.mark.parametrize("name", sorted(WORDS))
def test_refused_in_torchs_words(name, dtype_name):
    _check(WORDS[name], dtype_name, 0)


@pytest.mark.parametrize("name", ["softshrink", "hardshrink", "hardsigmoid"])
def test_integer_refusals_name_torchs_dtype(name):  # ('Long', not NumPy's 'int64')
    _check(lambda t, F, z, m: WORDS[name](t, F, z.real.to(t.int64), m), "complex128", 0)


@pytest.mark.parametrize("dtype_name", ["complex64", "complex128"])
@pytest.mark.parametrize("name", sorted(COMPUTED))
def test_computed_as_torch(name, dtype_name):
    _check(COMPUTED[name], dtype_name, 1e-12 if dtype_name == "complex128" else 2e-6)


def _gradient(lib, call):
    z = lib.tensor(VALUES, dtype=lib.complex128).reshape(2, 3).requires_grad_()
    out = call(lib, z)
    (out * lib.tensor(VALUES[::-1].copy(), dtype=lib.complex128).reshape(2, 3)).real.sum().backward()
    return z.grad


# torch's complex gradients (its formula conjugated) for the complex functions computed above
GRADIENTS = {
    "logaddexp": lambda t, z: t.logaddexp(z, z.flip(0) * 2),
    "logcumsumexp": lambda t, z: t.logcumsumexp(z, 1),
    "logcumsumexp_dim0": lambda t, z: z.logcumsumexp(dim=0),
    "renorm": lambda t, z: t.renorm(z, 2, 0, 1.0),
    "renorm_p1": lambda t, z: z.renorm(p=1, dim=1, maxnorm=0.5),
    "rms_norm": lambda t, z: t.nn.functional.rms_norm(z, (3,)),
    "rms_norm_weight": lambda t, z: t.nn.functional.rms_norm(z, [3], z[0].detach() * 2, eps=1e-6),
}


@pytest.mark.parametrize("name", sorted(GRADIENTS))
def test_complex_gradient_as_torch(name):
    want = _gradient(torch, GRADIENTS[name]).resolve_conj().numpy()
    np.testing.assert_allclose(_gradient(ml, GRADIENTS[name]).numpy(), want, rtol=1e-12, atol=1e-12)
