"""Extreme values and the special functions (round 29; tests/extremes_sweep.py found them).

Python's ``math`` module raises where C returns inf or NaN: float64 lgamma past ~2.5e305, polygamma(n >= 171)'s n!,
logspace past the largest double, the gamma sampler's gradient at alpha = 1e300 -- each killed a user's run where
torch answers. Hurwitz's zeta stepped forever at q = -1e308. And zeta / polygamma summed on where torch's Cephes loop
returns, in the wrong precision for 16-bit inputs: an ulp off torch's in most polygamma(n >= 2) elements.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import minilora as ml  # noqa: E402

EXTREMES = [0.0, -0.0, 5e-324, -5e-324, 2.2e-308, 1.0, -1.0, 0.5, -2.5, 1e4, -1e4, 2.5e305, 1e308, -1e308,
            np.inf, -np.inf, np.nan]


def same(ours, theirs):
    if hasattr(ours, "detach"):
        ours = ours.detach()
        ours = (ours.float() if ours.dtype in (ml.bfloat16, ml.float16) else ours).numpy()
    theirs = theirs.detach().float().numpy() if theirs.dtype in (torch.bfloat16, torch.float16) else \
        theirs.detach().numpy()
    ours = ours.astype(theirs.dtype)
    assert ours.shape == theirs.shape
    differ = (ours != theirs) & ~(np.isnan(ours) & np.isnan(theirs))
    assert not differ.any(), f"{differ.sum()} of {differ.size} differ: minilora {ours[differ][:5]}, " \
                             f"torch {theirs[differ][:5]} at {np.argwhere(differ)[:5].tolist()}"


def both(fn, *arrays, dtype="float64", **kwargs):
    """fn on each library's tensors of ``arrays`` (as ``dtype``): (minilora's, torch's)."""
    theirs = [torch.tensor(np.asarray(a, np.float64)).to(getattr(torch, dtype)) for a in arrays]
    ours = [ml.tensor(t.double().numpy(), dtype=getattr(ml, dtype)) for t in theirs]  # (the same rounded values)
    return fn(ml, *ours, **kwargs), fn(torch, *theirs, **kwargs)


@pytest.mark.parametrize("name", ["lgamma", "special.gammaln", "mvlgamma", "special.multigammaln"])
def test_log_gamma_of_huge_values_is_inf_not_an_overflow_error(name):
    def fn(lib, x):
        f = lib
        for part in name.split("."):
            f = getattr(f, part)
        return f(x, 2) if "gamma" in name and "multi" in name or name == "mvlgamma" else f(x)
    ours, theirs = both(fn, [1e308, 3e306, -1e308, 2.5e305])
    np.testing.assert_array_equal(np.isinf(ours.numpy()), np.isinf(theirs.numpy()))


def test_lgamma_gradient_of_huge_values():
    x = ml.tensor([1e308, 1e-310], dtype=ml.float64, requires_grad=True)
    ml.lgamma(x).sum().backward()
    t = torch.tensor([1e308, 1e-310], dtype=torch.float64, requires_grad=True)
    torch.lgamma(t).sum().backward()
    same(x.grad, t.grad)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [2, 3, 5, 10, 34, 35, 40, 170, 171, 200])
def test_polygamma_is_torchs_bit_for_bit(n, dtype):
    """``(sign * exp(lgamma(n + 1))) * zeta(n + 1, x)`` with C's functions and Cephes' early returns; inf from n = 171
    (Python's math.exp raised OverflowError)."""
    x = np.concatenate([np.random.default_rng(n).uniform(-10, 20, 3000), EXTREMES])
    same(*both(lambda lib, t: lib.polygamma(n, t), x, dtype=dtype))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("n", [2, 3, 7, 300])
def test_sixteen_bit_polygamma_is_torchs_for_every_value(n, dtype):
    """torch's 16-bit polygamma computes zeta in float (its accumulate type) and n + 1 as a 16-bit number: all
    65536 inputs."""
    bits = torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16).view(getattr(torch, dtype))
    ours = ml.polygamma(n, ml.tensor(bits.float().numpy()).to(getattr(ml, dtype)))
    same(ours.to(ml.float32), torch.polygamma(n, bits).float())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zeta_is_torchs_bit_for_bit_with_its_gradient(dtype):
    """Each element returns where Cephes' loop does; float32's first power is C's powf (torch's overload)."""
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.uniform(1.1, 20, 3000), [2.0, 3.0, 2.0, 2.0, 4.0, 2.0, 1.0, 0.5]])
    q = np.concatenate([rng.uniform(-5, 20, 3000), [-1e308, -2.2e-308, 1e308, np.inf, -1e4, np.nan, 2.0, 2.0]])
    same(*both(lambda lib, a, b: lib.special.zeta(a, b), s, q, dtype=dtype))
    ours_q = ml.tensor(q.astype(dtype), requires_grad=True)
    ml.special.zeta(ml.tensor(s.astype(dtype)), ours_q).sum().backward()
    torch_q = torch.tensor(q.astype(dtype), requires_grad=True)
    torch.special.zeta(torch.tensor(s.astype(dtype)), torch_q).sum().backward()
    same(ours_q.grad, torch_q.grad)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_zeta_refuses_sixteen_bit_inputs_as_torch(dtype):
    with pytest.raises(NotImplementedError, match="zeta_cpu"):
        torch.special.zeta(torch.ones(2, dtype=getattr(torch, dtype)), torch.ones(2, dtype=getattr(torch, dtype)))
    with pytest.raises(NotImplementedError, match="\"zeta_cpu\" not implemented for"):
        ml.special.zeta(ml.ones(2, dtype=getattr(ml, dtype)), ml.ones(2, dtype=getattr(ml, dtype)))


@pytest.mark.parametrize("start, end, steps, base, dtype", [
    (300, 400, 3, 10.0, "float64"), (0, 1, 3, -2.0, "float64"), (-1, 1, 3, 0.0, "float64"),
    (-3, 3, 7, -0.0, "float64"), (400, 400, 1, 10.0, "bool"), (30, 40, 3, 10.0, "float32"),
    (1, 3, 3, -2.0, "float16")])
def test_logspace_gives_cs_pow_where_python_raises(start, end, steps, base, dtype):
    """inf past the largest double, NaN for a negative base's fractional power, -inf for -0 to an odd negative power."""
    ours = ml.logspace(start, end, steps, base=base, dtype=getattr(ml, dtype))
    theirs = torch.logspace(start, end, steps, base=base, dtype=getattr(torch, dtype))
    assert str(ours.tolist()) == str(theirs.tolist())


@pytest.mark.parametrize("start, end, steps, dtype", [(-1e308, 1e308, 5, "float64"), (-np.inf, 1.0, 4, "float64"),
                                                      (-np.inf, 1.0, 4, "float32"), (-3.4e38, 3.4e38, 6, "float32")])
def test_linspace_keeps_inf_and_nan_as_torchs_fused_multiply_add(start, end, steps, dtype):
    try:
        theirs = torch.linspace(start, end, steps, dtype=getattr(torch, dtype))
    except RuntimeError:
        with pytest.raises(RuntimeError):
            ml.linspace(start, end, steps, dtype=getattr(ml, dtype))
        return
    assert str(ml.linspace(start, end, steps, dtype=getattr(ml, dtype)).tolist()) == str(theirs.tolist())


_GAMMA_VALUES = [1e300, 1e-300, 0.0, 5e-324, 1.0, 0.5, 8.5, 1e4, np.inf, np.nan, 1e-3, 30.0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gamma_and_dirichlet_gradients_at_the_edges(dtype):
    """torch's scalar approximations of d x / d alpha run on any draw: C's inf and NaN, not ZeroDivisionError."""
    alpha = np.repeat(_GAMMA_VALUES, len(_GAMMA_VALUES)).astype(dtype)
    x = np.tile(_GAMMA_VALUES, len(_GAMMA_VALUES)).astype(dtype)
    same(ml._standard_gamma_grad(ml.tensor(alpha), ml.tensor(x)),
         torch._standard_gamma_grad(torch.from_numpy(alpha), torch.from_numpy(x)))
    total, fraction = alpha + alpha[::-1], np.clip(x, 0, 1)
    same(ml._dirichlet_grad(ml.tensor(fraction), ml.tensor(alpha), ml.tensor(total)),
         torch._dirichlet_grad(torch.from_numpy(fraction), torch.from_numpy(alpha), torch.from_numpy(total)))


def test_renorm_leaves_a_slice_with_a_nan_norm_as_it_is():
    """torch's factor is 1 where ``norm > maxnorm`` is false, NaN included (minilora's ``norm * 0 + 1`` was NaN)."""
    x = np.array([[np.nan, 1.0], [np.inf, 1.0], [1.0, 2.0], [1e308, 1e308], [-np.inf, np.nan]])
    for dtype in ("float64", "float32", "bfloat16"):
        for p in (1, 2, 3):
            same(*both(lambda lib, t: lib.renorm(t, p, 0, 0.5), x, dtype=dtype))


def test_cosine_similarity_of_huge_vectors_is_torchs():
    """The norm clamped to eps: at an infinite norm ``clamp_min(eps) - norm`` was inf - inf (NaN); torch gives 0."""
    a = np.array([[0.0, 0.0], [np.inf, 1.0], [1e308, 1e308], [1.0, np.nan], [1e-300, 1e-300]])
    b = np.array([[1.0, 2.0], [np.inf, 1.0], [1e308, 1e308], [1.0, 1.0], [1.0, 1.0]])
    same(*both(lambda lib, x, y: lib.nn.functional.cosine_similarity(x, y), a, b))


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
def test_frexp_of_the_top_binade_and_its_gradient(dtype):
    """The mantissa is C's frexp (x / 2^128 overflowed the scale: 0 for float32's largest values); the gradient is
    torch's ``grad / exponent.exp2()``, whose int exponent's exp2 is float32 (inf below 2^-126, 0 past 2^127)."""
    values = np.array([0.0, -0.0, 5e-324, 2.2e-308, 1.0, -1.0, 1.79e308, 8.9e307, np.inf, np.nan, 3.4028235e38,
                       -3.0e38, 1e-40, 1e4])
    theirs = torch.tensor(values).to(getattr(torch, dtype)).requires_grad_(True)
    ours = ml.tensor(theirs.detach().double().numpy(), dtype=getattr(ml, dtype), requires_grad=True)
    (t_mantissa, t_exponent), (m_mantissa, m_exponent) = torch.frexp(theirs), ml.frexp(ours)
    same(m_mantissa, t_mantissa)
    same(m_exponent, t_exponent)
    weights = np.arange(len(values), dtype=np.float64)
    (t_mantissa * torch.tensor(weights).to(theirs.dtype)).sum().backward()
    (m_mantissa * ml.tensor(weights, dtype=ours.dtype)).sum().backward()
    same(ours.grad, theirs.grad)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("transposed", [False, True])
def test_hardswish_gradient_at_nan_where_torch_vectorizes(dtype, transposed):
    """torch's vectorized hardswish_backward blends ``g (x / 3 + 1/2)`` in at a NaN (NaN), its scalar tail gives g."""
    x = np.array([[-3.0, 3.0, np.nan, -3.5, 2.9] * 8] * 3)
    theirs = torch.tensor(x.T.copy() if transposed else x, dtype=getattr(torch, dtype))
    ours = ml.tensor(theirs.numpy(), dtype=getattr(ml, dtype))
    theirs, ours = (theirs.t(), ours.t()) if transposed else (theirs, ours)
    theirs.requires_grad_(True)
    ours.requires_grad_(True)
    torch.nn.functional.hardswish(theirs).sum().backward()
    ml.nn.functional.hardswish(ours).sum().backward()
    same(ours.grad, theirs.grad)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rprop_steps_on_through_inf_and_nan_gradients_as_torch(dtype):
    """torch.sign(NaN) is 0 (``(0 < a) - (a < 0)``): Rprop's sign of grad * prev (inf * 0 on the first step) and of
    the gradient; NumPy's sign is NaN there, and the weights went NaN."""
    grads = np.array([0.0, 1e-300, 1.0, -1.0, 1e300, -1e300, 1.79e308, np.inf, -np.inf, np.nan, 3.0])
    weights = np.array([1.0, 0.5, 0.0, 2.0, 1e-300, 3.0, -4.0, 1.0, 1.0, 1.0, -0.0])
    results = []
    for lib in (ml, torch):
        p = lib.nn.Parameter(lib.tensor(weights.astype(dtype)))
        optimizer = lib.optim.Rprop([p])
        for step in range(3):
            p.grad = lib.tensor((grads * (step + 1)).astype(dtype))
            optimizer.step()
        results.append(p.detach())
    same(*results)
