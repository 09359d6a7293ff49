"""torch's Gamma-family samplers and their implicit reparameterization gradients:
``torch._standard_gamma``, ``torch._standard_gamma_grad``, ``torch._sample_dirichlet``,
``torch._dirichlet_grad`` and ``torch.binomial`` (aten/src/ATen/native/Distributions.h and .cpp).

The samplers run element by element in index order, as ATen's ``cpu_serial_kernel``, drawing from
the generator exactly what torch's kernel draws: Gamma is Marsaglia and Tsang's rejection method on
torch's double normals (``normal_distribution<double>``, the cached second Box-Muller value
included) and 53-bit uniform doubles, so ``manual_seed(0); Gamma(2., 1.).sample()`` is torch's.
The arithmetic follows the kernel's C++ types: for a float32 alpha, ``alpha - 1.0f / 3.0f`` and the
boost ``alpha + 1.0f`` are float operations, the rest double (torch builds this file without FMA,
so nothing is fused).

A Gamma sample has no closed-form inverse cdf, so its gradient is implicit:
dx/dalpha = -(dcdf/dalpha) / pdf, which torch approximates by a Taylor series for small x, a Rice
saddle-point expansion for large alpha, and a fitted rational function elsewhere
(``standard_gamma_grad_one``); Dirichlet's (and so Beta's) uses the analogous Beta approximations.
These are scalar Python ports of those formulas: samplers for tutorials' sizes, not for millions.
"""
import math

import numpy as np

from .. import dtypes, float32_math
from ..device import xp_of
from ..tensor import Function, Tensor, is_grad_enabled, no_meta_kernel

__all__ = ["standard_gamma", "standard_gamma_grad", "sample_dirichlet", "dirichlet_grad", "binomial"]

_F32 = np.float32
_THIRD_F = float(_F32(1.0) / _F32(3.0))  # C's 1.0f / 3.0f
_SQUEEZE_F = float(_F32(0.0331))  # the squeeze test's 0.0331f


def _refuse_16bit(name, *tensors):
    """ATen dispatches these kernels on float and double only (16-bit and integer tensors: its
    NotImplementedError), and on tensors of one dtype (a second one: its RuntimeError)."""
    for t in tensors:
        if t.dtype.name not in ("float32", "float64"):
            raise NotImplementedError(f'"{name}" not implemented for \'{dtypes.torch_name(t.dtype)}\'')
    for t in tensors[1:]:
        if t.dtype != tensors[0].dtype:
            raise RuntimeError(f"Found dtype {dtypes.torch_name(t.dtype)} but expected "
                               f"{dtypes.torch_name(tensors[0].dtype)}")


def sample_gamma_one(alpha, single, uniform, normal):
    """One draw of torch's ``sample_gamma`` (alpha a Python float; ``single``: alpha's C type is float)."""
    scale = 1.0
    if alpha < 1.0:
        if alpha == 0.0:
            return 0.0
        exponent = float(_F32(1.0) / _F32(alpha)) if single else 1.0 / alpha
        scale *= math.pow(1.0 - uniform(), exponent)
        alpha = float(_F32(alpha) + _F32(1.0)) if single else alpha + 1.0
    d = float(_F32(alpha) - _F32(_THIRD_F)) if single else alpha - _THIRD_F
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        while True:
            x = normal()
            y = 1.0 + c * x
            if y > 0:
                break
        v = y * y * y
        u = 1.0 - uniform()
        xx = x * x
        if u < 1.0 - _SQUEEZE_F * xx * xx:
            return scale * d * v
        if math.log(u) < 0.5 * xx + d * (1.0 - v + math.log(v)):
            return scale * d * v


def _samplers(generator):
    return (lambda: float(generator._unit_doubles(1)[0]),
            lambda: float(generator._normal_doubles(1)[0]))


def gamma_draws(generator, alphas, single):
    """Standard Gamma draws for an array of alphas (C order), as doubles; ``single`` as above."""
    uniform, normal = _samplers(generator)
    return np.array([sample_gamma_one(a, single, uniform, normal) for a in alphas.ravel().tolist()],
                    np.float64).reshape(alphas.shape)


def _gen(generator):
    from ..factories import _gen as resolve
    return resolve(generator)


class StandardGamma(Function):
    """``torch._standard_gamma(alpha)``: its gradient is torch's ``grad * _standard_gamma_grad(alpha, x)``."""

    @staticmethod
    def forward(ctx, alpha, generator):
        host = np.asarray(alpha.get() if hasattr(alpha, "get") else alpha)  # (drawn on the host, as torch's CPU)
        single = host.dtype == np.float32
        draws = gamma_draws(generator, host.astype(np.float64), single).astype(host.dtype)
        tiny = np.finfo(host.dtype).tiny  # (std::max(numeric_limits<scalar_t>::min(), sample))
        out = np.maximum(draws, tiny) if draws.size else draws
        ctx.alpha, ctx.out = host, out
        return xp_of(alpha).asarray(out)

    @staticmethod
    def backward(ctx, g):
        return g * xp_of(g).asarray(_gamma_grad_array(ctx.alpha, ctx.out)), None


def standard_gamma(input, generator=None):
    """``torch._standard_gamma(alpha)``: one Gamma(alpha, 1) draw per element, differentiable in alpha."""
    from ..random import note_cuda_draw
    _refuse_16bit("gamma_cpu", input)
    if input.is_meta:  # (torch's has a meta kernel: the shape, nothing drawn)
        return input.detach().new_empty(tuple(input.shape)).requires_grad_(input.requires_grad)
    note_cuda_draw(input.device)
    return StandardGamma.apply(input, _gen(generator))


# ---- the implicit gradients -------------------------------------------------------------------
_DIGAMMA_ASYMPTOTIC = (8.33333333333333333333E-2, -2.10927960927960927961E-2, 7.57575757575757575758E-3,
                       -4.16666666666666666667E-3, 3.96825396825396825397E-3, -8.33333333333333333333E-3,
                       8.33333333333333333333E-2)
_PSI_10 = 2.25175258906672110764


def digamma_one(x, single=False):
    """Distributions.h's own ``digamma_one`` (not torch.digamma's kernel). ``single``: x's C type is
    float (the recurrence's ``1 / x``, ``x + 1``, ``log(x)`` and ``0.5f / x`` are float operations;
    the sums double)."""
    real = _F32 if single else float
    x = real(x)
    if x == 0:
        return math.inf
    additional = 0.0
    if x < 0:
        if x == math.floor(x):
            return math.inf
        additional = -float(real(math.pi)) / math.tan(float(real(math.pi) * x))
        x = real(1) - x
    result = 0.0
    while x < 10:
        result -= float(real(1) / x)
        x = real(x + real(1))
    if x == 10:
        return result + _PSI_10 + additional
    series = 0.0
    if x < 1.0e17:
        z = 1.0 / float(x * x)
        for coefficient in _DIGAMMA_ASYMPTOTIC:
            series = series * z + coefficient
        series *= z
    log_x = float(float32_math.c_function("logf", np.array([x], _F32))[0]) if single else math.log(x)
    return result + log_x - float(real(0.5) / x) - series + additional


def standard_gamma_grad_one(alpha, x):
    """torch's ``standard_gamma_grad_one<scalar_t, double>``: d x / d alpha for x ~ Gamma(alpha)."""
    if x < 0.8:  # Taylor series of the cdf in x
        numer, denom = 1.0, alpha
        series1, series2 = numer / denom, numer / (denom * denom)
        for i in range(1, 6):
            numer *= -x / i
            denom += 1
            series1 += numer / denom
            series2 += numer / (denom * denom)
        pow_x_alpha = _c_pow(x, alpha)
        gamma_pdf = _c_pow(x, alpha - 1) * _c_exp(-x)
        gamma_cdf = pow_x_alpha * series1
        gamma_cdf_alpha = (_c_log(x) - digamma_one(alpha)) * gamma_cdf - pow_x_alpha * series2
        result = _divide(-gamma_cdf_alpha, gamma_pdf)
        return 0.0 if math.isnan(result) else result
    if alpha > 8.0:  # Rice's saddle point expansion
        if 0.9 * alpha <= x <= 1.1 * alpha:
            numer_1 = 1 + 24 * alpha * (1 + 12 * alpha)
            numer_2 = (1440 * (alpha * alpha) + 6 * x * (53 - 120 * x) - 65 * x * x / alpha
                       + alpha * (107 + 3600 * x))
            denom = 1244160 * (alpha * alpha) * (alpha * alpha)
            return numer_1 * numer_2 / denom
        denom = _c_sqrt(8 * alpha)
        term2 = denom / (alpha - x)
        term3 = _c_pow(x - alpha - alpha * _c_log(x / alpha), -1.5)
        term23 = term2 - term3 if x < alpha else term2 + term3
        term1 = _c_log(x / alpha) * term23 - _c_sqrt(2 / alpha) * (alpha + x) / ((alpha - x) * (alpha - x))
        stirling = 1 + 1 / (12 * alpha) * (1 + 1 / (24 * alpha))
        return -stirling * (x * term1) / denom
    u, v = _c_log(x / alpha), _c_log(alpha)  # a bivariate rational approximation
    coef_v = [a + u * (b + u * c) for a, b, c in zip(*_GAMMA_GRAD_COEFFICIENTS)]
    p = coef_v[0] + v * (coef_v[1] + v * (coef_v[2] + v * coef_v[3]))
    q = coef_v[4] + v * (coef_v[5] + v * (coef_v[6] + v * coef_v[7]))
    return _c_exp(p / q)


_GAMMA_GRAD_COEFFICIENTS = (
    (0.16009398, -0.094634809, 0.025146376, -0.0030648343, 1, 0.32668115, 0.10406089, 0.0014179084),
    (0.53487893, 0.1298071, 0.065735949, -0.0015649758, 0.16639465, 0.020070113, -0.0035938915, -0.00058392623),
    (0.040121004, -0.0065914022, -0.0026286047, -0.0013441777, 0.017050642, -0.0021309326, 0.00085092367,
     -1.5247877e-07))


# C's answers where Python's math module raises (torch's kernels run on whatever a sampler drew: alpha = 1e300, x = 0
# ...). With np.float64 operands (``_as_doubles``) the arithmetic, too, gives inf and NaN where Python's floats raise
# ZeroDivisionError; the values are the same IEEE doubles.
_c_pow = float32_math.c_pow


def _c_log(x):
    return math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)


def _c_sqrt(x):
    return math.sqrt(x) if x >= 0 else math.nan


def _c_exp(x):
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _as_doubles(*arrays):
    """The elements of broadcast arrays as np.float64 numbers, for the scalar C-like code above."""
    return [list(map(np.float64, a.ravel().tolist())) for a in np.broadcast_arrays(*arrays)]


def _divide(a, b):
    with np.errstate(all="ignore"):
        return float(np.float64(a) / np.float64(b))


def _gamma_grad_array(alpha, x):
    shape = np.broadcast_shapes(np.shape(alpha), np.shape(x))
    with np.errstate(all="ignore"):
        values = [standard_gamma_grad_one(a, v) for a, v in zip(*_as_doubles(alpha, x))]
    return np.array(values, np.float64).reshape(shape).astype(np.result_type(alpha))


def standard_gamma_grad(input, output):
    """``torch._standard_gamma_grad(alpha, x)``: torch's approximation of d x / d alpha."""
    _refuse_16bit("_standard_gamma_grad_cpu", input, output)
    out = Tensor(_gamma_grad_array(input.detach().cpu().numpy(), output.detach().cpu().numpy()),
                 dtype=input.dtype, device=input.device)
    return _refusing_derivative(out, [input, output], "_standard_gamma_grad", NotImplementedError)


# ---- Dirichlet ----------------------------------------------------------------------------------
def sample_dirichlet(input, generator=None):
    """``torch._sample_dirichlet(alpha)``: Gamma draws in double (alpha cast to double, torch's guard
    against underflow), each row divided by its sum (torch's double sum), then clamped into
    [tiny, the float below 1] of alpha's dtype. Not differentiable (torch's Dirichlet wraps it)."""
    from .. import tensor as make_tensor
    _refuse_16bit("dirichlet", input)
    no_meta_kernel("_sample_dirichlet", input)
    host = input.detach().cpu().numpy()
    gammas = gamma_draws(_gen(generator), host.astype(np.float64), single=False)
    gammas = np.maximum(gammas, np.finfo(np.float64).tiny) if gammas.size else gammas
    sums = make_tensor(gammas, dtype=dtypes.float64).sum(-1, keepdim=True).numpy() if gammas.ndim else gammas
    dtype = host.dtype
    ratios = (gammas / sums).astype(dtype)
    below_one = np.nextafter(dtype.type(1), dtype.type(0))
    out = Tensor(np.minimum(below_one, np.maximum(np.finfo(dtype).tiny, ratios)), dtype=input.dtype,
                 device=input.device)
    return _refusing_derivative(out, [input], "_sample_dirichlet")


def _refusing_derivative(out, inputs, name, error=RuntimeError):
    """``out`` in its inputs' graph through a node whose backward raises torch's error, as torch records it."""
    from ..factories import _NoDerivative
    linked = [t for t in inputs if t.requires_grad]
    if not linked or not is_grad_enabled():
        return out
    return _NoDerivative.apply(linked[0], values=out._array, name=name, error=error)


def _beta_grad_alpha_small(x, alpha, beta, real):
    """d x / d alpha of a Beta(alpha, beta) draw near 0 (Taylor series), in x's C type ``real``."""
    factor = real(digamma_one(alpha, real is _F32)) - real(digamma_one(alpha + beta, real is _F32)) - _log(x, real)
    numer = real(1)
    series = numer / alpha * (factor + 1 / alpha)
    for i in range(1, 11):
        numer *= (real(i) - beta) * x / real(i)
        denom = alpha + real(i)
        series += numer / denom * (factor + 1 / denom)
    result = x * _pow(1 - x, -beta, real) * series
    return real(0) if math.isnan(result) else result


def _beta_grad_beta_small(x, alpha, beta, real):
    """d x / d beta of a Beta(alpha, beta) draw near 0 (Taylor series), in x's C type ``real``."""
    factor = real(digamma_one(alpha + beta, real is _F32)) - real(digamma_one(beta, real is _F32))
    numer, betas, dbetas, series = real(1), real(1), real(0), factor / alpha
    for i in range(1, 9):
        numer *= -x / real(i)
        dbetas = dbetas * (beta - real(i)) + betas
        betas = betas * (beta - real(i))
        series += numer / (alpha + real(i)) * (dbetas + factor * betas)
    result = -_pow(1 - x, 1 - beta, real) * series
    return real(0) if math.isnan(result) else result


def _log(x, real):
    if real is _F32:
        return float32_math.c_function("logf", np.array([x], _F32))[0]
    return _c_log(x)


def _pow(x, y, real):
    if real is _F32:
        return float32_math.c_function2("powf", x, y)[()]
    return _c_pow(x, y)


def _beta_grad_alpha_mid(x, alpha, beta):
    """d x / d alpha of a Beta draw for large alpha and beta (Rice's saddle point), in double."""
    total = alpha + beta
    mean = alpha / total
    std = _c_sqrt(alpha * beta / (total + 1)) / total
    if mean - 0.1 * std <= x <= mean + 0.1 * std:  # (around the singularity at x = mean)
        poly = 47 * x * (beta * beta) * (beta * beta) + alpha * (
            (43 + 20 * (16 + 27 * beta) * x) * (beta * beta) * beta + alpha * (
                3 * (59 + 180 * beta - 90 * x) * (beta * beta) + alpha * (
                    (453 + 1620 * beta * (1 - x) - 455 * x) * beta + alpha * (8 * (1 - x) * (135 * beta - 11)))))
        prefactor_num = (1 + 12 * alpha) * (1 + 12 * beta) / (total * total)
        prefactor_den = 12960 * alpha * alpha * alpha * beta * beta * (1 + 12 * total)
        return prefactor_num / (1 - x) * poly / prefactor_den
    prefactor = -x / _c_sqrt(2 * alpha * beta / total)
    stirling = ((1 + 1 / (12 * alpha) + 1 / (288 * alpha * alpha)) * (1 + 1 / (12 * beta) + 1 / (288 * beta * beta))
                / (1 + 1 / (12 * total) + 1 / (288 * total * total)))
    term1_num = 2 * (alpha * alpha) * (x - 1) + alpha * beta * (x - 1) - x * (beta * beta)
    axbx = alpha * (x - 1) + beta * x
    term1 = term1_num / (_c_sqrt(2 * alpha / beta) * _c_pow(total, 1.5) * axbx * axbx)
    term2 = 0.5 * _c_log(alpha / (total * x))
    term3 = _c_sqrt(8 * alpha * beta / total) / (beta * x + alpha * (x - 1))
    term4 = _c_pow(beta * _c_log(beta / (total * (1 - x))) + alpha * _c_log(alpha / (total * x)), -1.5)
    return stirling * prefactor * (term1 + term2 * (term3 + (term4 if x < mean else -term4)))


def dirichlet_grad_one(x, alpha, total, real):
    """torch's ``dirichlet_grad_one<scalar_t, double>``: -(d cdf / d alpha) / pdf / (1 - x) of a Beta(alpha,
    total - alpha) draw x; ``real`` the tensor's C type (np.float32 or float), which some branches compute in."""
    x_, alpha_, total_ = np.float64(x), np.float64(alpha), np.float64(total)
    x, alpha, total = real(x), real(alpha), real(total)
    beta, beta_ = total - alpha, total_ - alpha_
    boundary = total * x * (1 - x)
    if x <= 0.5 and boundary < 2.5:
        return _beta_grad_alpha_small(x, alpha, beta, real)
    if x >= 0.5 and boundary < 0.75:
        return -_beta_grad_beta_small(1 - x, beta, alpha, real)
    if alpha > 6 and beta > 6:
        return _beta_grad_alpha_mid(x_, alpha_, beta_)
    u = _c_log(x_)  # a rational correction to an analytic approximation
    a = _c_log(alpha_) - u
    b = _c_log(total_) - a
    powers_u, powers_a = (1.0, u, u * u), (1.0, a, a * a)
    p = q = 0.0
    for i in range(3):
        for j in range(3):
            ua = powers_u[i] * powers_a[j]
            cp, cq = _DIRICHLET_P[i][j], _DIRICHLET_Q[i][j]
            p += ua * (cp[0] + b * (cp[1] + b * (cp[2] + b * cp[3])))
            q += ua * (cq[0] + b * (cq[1] + b * (cq[2] + b * cq[3])))
    single = real is _F32  # (digamma_one<scalar_t, double> takes its argument as scalar_t)
    digammas = real(digamma_one(real(total_), single)) - real(digamma_one(real(alpha_), single))  # (in scalar_t)
    approx = x_ * float(digammas) / beta_
    return p / q * approx


_DIRICHLET_P = (
    ((1.003668233, -0.01061107488, -0.0657888334, 0.01201642863),
     (0.6336835991, -0.3557432599, 0.05486251648, -0.001465281033),
     (-0.03276231906, 0.004474107445, 0.002429354597, -0.0001557569013)),
    ((0.221950385, -0.3187676331, 0.01799915743, 0.01074823814),
     (-0.2951249643, 0.06219954479, 0.01535556598, 0.001550077057),
     (0.02155310298, 0.004170831599, 0.001292462449, 6.976601077e-05)),
    ((-0.05980841433, 0.008441916499, 0.01085618172, 0.002319392565),
     (0.02911413504, 0.01400243777, -0.002721828457, 0.000751041181),
     (0.005900514878, -0.001936558688, -9.495446725e-06, 5.385558597e-05)))
_DIRICHLET_Q = (
    ((1, -0.02924021934, -0.04438342661, 0.007285809825),
     (0.6357567472, -0.3473456711, 0.05454656494, -0.002407477521),
     (-0.03301322327, 0.004845219414, 0.00231480583, -0.0002307248149)),
    ((0.5925320577, -0.1757678135, 0.01505928619, 0.000564515273),
     (0.1014815858, -0.06589186703, 0.01272886114, -0.0007316646956),
     (-0.007258481865, 0.001096195486, 0.0003934994223, -4.12701925e-05)),
    ((0.06469649321, -0.0236701437, 0.002902096474, -5.896963079e-05),
     (0.001925008108, -0.002869809258, 0.0008000589141, -6.063713228e-05),
     (-0.0003477407336, 6.959756487e-05, 1.097287507e-05, -1.650964693e-06)))


def _dirichlet_grad_array(x, alpha, total):
    x, alpha, total = np.broadcast_arrays(x, alpha, total)
    real = _F32 if x.dtype == np.float32 else np.float64
    with np.errstate(all="ignore"):
        values = [dirichlet_grad_one(*v, real) for v in zip(x.ravel().tolist(), alpha.ravel().tolist(),
                                                             total.ravel().tolist())]
    return np.array(values, np.float64).reshape(x.shape).astype(x.dtype)


def dirichlet_grad(x, alpha, total):
    """``torch._dirichlet_grad(x, alpha, total)``."""
    _refuse_16bit("_dirichlet_grad_cpu", x, alpha, total)
    arrays = [t.detach().cpu().numpy() for t in (x, alpha, total)]
    out = Tensor(_dirichlet_grad_array(*arrays), dtype=x.dtype, device=x.device)
    return _refusing_derivative(out, [x, alpha, total], "_dirichlet_grad")


# ---- binomial -----------------------------------------------------------------------------------
_STIRLING_TAILS = (0.0810614667953272, 0.0413406959554092, 0.0276779256849983, 0.02079067210376509,
                   0.0166446911898211, 0.0138761288230707, 0.0118967099458917, 0.0104112652619720,
                   0.00925546218271273, 0.00833056343336287)


def _stirling_tail(k):
    """log(k!) minus Stirling's approximation of it (a table below 10), in double."""
    if k < len(_STIRLING_TAILS):
        return _STIRLING_TAILS[int(k)]
    kp1sq = (k + 1) * (k + 1)
    return (1.0 / 12 - (1.0 / 360 - 1.0 / 1260 / kp1sq) / kp1sq) / (k + 1)


def _binomial_inversion(count, prob, real, uniform):
    """Count geometric waiting times until they pass ``count`` (small count * prob)."""
    geom_sum, num_geom = 0.0, real(0)
    logprob = float(float32_math.c_function("log1pf", np.array([-prob], _F32))[0]) if real is _F32 \
        else math.log1p(-prob)
    while True:
        geom_sum += math.ceil(_c_log(uniform()) / logprob)
        if geom_sum > count:
            return num_geom
        num_geom = num_geom + real(1)


def _btrs(count, prob, real, uniform):
    """Hoermann's transformed rejection with squeeze (BTRS), as TensorFlow's and torch's kernels
    write it; ``count`` and ``prob`` in the tensor's C type ``real``, the rest double."""
    stddev = float(np.sqrt(count * prob * (1 - prob)) if real is _F32 else math.sqrt(count * prob * (1 - prob)))
    b = 1.15 + 2.53 * stddev
    a = -0.0873 + 0.0248 * b + 0.01 * float(prob)
    c = float(count * prob) + 0.5
    v_r = 0.92 - 4.2 / b
    r = float(prob / (1 - prob))
    alpha = (2.83 + 5.1 / b) * stddev
    m = math.floor(float((count + 1) * prob))
    while True:
        u = uniform() - 0.5
        v = uniform()
        us = 0.5 - abs(u)
        k = real(math.floor((2 * a / us + b) * u + c))
        if k < 0 or k > count:
            continue
        if us >= 0.07 and v <= v_r:
            return k
        v = math.log(v * alpha / (a / (us * us) + b))
        upperbound = ((m + 0.5) * math.log((m + 1) / (r * (float(count) - m + 1)))
                      + float(count + 1) * math.log((float(count) - m + 1) / float(count - k + 1))
                      + (float(k) + 0.5) * math.log(r * float(count - k + 1) / float(k + 1))
                      + _stirling_tail(m) + _stirling_tail(float(count) - m)
                      - _stirling_tail(float(k)) - _stirling_tail(float(count - k)))
        if v <= upperbound:
            return k


def sample_binomial_one(count, prob, real, uniform):
    """torch's ``sample_binomial``: inversion below count * p = 10, BTRS above, by symmetry past p = 0.5."""
    count, prob = real(count), real(prob)
    if count <= 0.0 or prob <= 0.0:
        return 0.0
    if prob >= 1.0:
        return float(count)
    if prob <= 0.5:
        sampler = _btrs if count * prob >= 10.0 else _binomial_inversion
        return float(sampler(count, prob, real, uniform))
    if prob > 0.5:
        qprob = real(1.0 - float(prob))
        sampler = _btrs if count * qprob >= 10.0 else _binomial_inversion
        return float(count - sampler(count, qprob, real, uniform))
    return math.nan


def binomial(count, prob, generator=None):
    """``torch.binomial(count, prob)``: one Binomial(count, prob) draw per element (floats)."""
    from ..factories import _broadcast, _drawn
    if count.dtype.kind not in "fc":  # (torch's Python check, before its kernel's)
        raise ValueError(f"binomial only supports floating-point dtypes for count, got: "
                         f"{dtypes.torch_name(count.dtype)}")
    _refuse_16bit("binomial_cpu", count, prob)
    no_meta_kernel("binomial", count, prob)
    _broadcast(tuple(count.shape), tuple(prob.shape))  # (torch's RuntimeError naming the first mismatch)
    counts, probs = np.broadcast_arrays(count.detach().cpu().numpy(), prob.detach().cpu().numpy())
    real = _F32 if counts.dtype == np.float32 else float
    uniform, _ = _samplers(_gen(generator))
    values = [sample_binomial_one(n, p, real, uniform) for n, p in zip(counts.ravel().tolist(), probs.ravel().tolist())]
    out = _drawn(np.array(values, np.float64).reshape(counts.shape), count.dtype, count.device)
    return _refusing_derivative(out, [count, prob], "binomial")  # (torch's node has no derivative, not a zero one)
