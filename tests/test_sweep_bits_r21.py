"""Round 21's op sweep (tests/grad_bits_sweep.py): float32 values and gradients in torch's bits for the ops LLM
users call most. Each case is torch's own computation written the way its users call it, compared bit for bit
(signed zeros included): a float32 value off by an ulp is a silent divergence users see next to torch."""
import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _values_and_grads(lib, fn, arrays, **kwargs):
    """``fn(*arrays, **kwargs)`` and the gradient of ``sum(out * w)`` for each array, as NumPy arrays."""
    leaves = [lib.tensor(a).requires_grad_() for a in arrays]
    lib.manual_seed(42)
    out = fn(*leaves, **{k: lib.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()})
    w = lib.tensor(np.random.default_rng(7).standard_normal(tuple(out.shape)).astype(np.float32))
    grads = lib.autograd.grad((out * w.to(out.dtype)).sum(), leaves)
    return [out.detach().float().numpy()] + [g.float().numpy() for g in grads]


def _same_bits(torch_fn, minilora_fn, arrays, **kwargs):
    theirs = _values_and_grads(torch, torch_fn, arrays, **kwargs)
    ours = _values_and_grads(ml, minilora_fn, arrays, **kwargs)
    for name, a, b in zip(("value", *(f"grad {i}" for i in range(len(arrays)))), theirs, ours):
        assert a.shape == b.shape, name
        off = (a.view(np.int32) != b.view(np.int32)) & ~(np.isnan(a) & np.isnan(b))
        assert not off.any(), f"{name}: {int(off.sum())} of {a.size} elements off torch's bits"


def _draw(*shapes, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


# ---- scaled_dot_product_attention: where torch's CPU dispatcher runs its math kernel -----------------------------
@pytest.mark.parametrize("kwargs", [dict(is_causal=True), dict(), dict(dropout_p=0.5), dict(scale=-0.3),
                                    dict(is_causal=True, dropout_p=0.25)], ids=str)
def test_sdpa_3d_is_torchs_math_kernel(kwargs):
    """3-D inputs (op_db's samples; no flash kernel): q and k each scaled by sqrt(scale), _safe_softmax, dropout."""
    arrays = _draw((4, 3, 8), (4, 6, 8), (4, 6, 8))
    _same_bits(F.scaled_dot_product_attention, ml.nn.functional.scaled_dot_product_attention, arrays, **kwargs)


def test_sdpa_query_broadcast_over_key_batches():
    """A 3-D query meeting 4-D keys: torch's matmul sums the query's gradient over the batch, then scales it."""
    arrays = _draw((4, 3, 8), (4, 4, 6, 8), (4, 4, 6, 8), seed=1)
    _same_bits(F.scaled_dot_product_attention, ml.nn.functional.scaled_dot_product_attention, arrays, is_causal=True)


def test_sdpa_dropout_with_grouped_query_heads_and_masks():
    """4-D with dropout (the math kernel): GQA's repeat_interleave, a boolean mask with a row that sees no key
    (zeros, and the signed-zero gradients of torch's _safe_softmax), a float mask."""
    arrays = _draw((2, 4, 3, 8), (2, 2, 5, 8), (2, 2, 5, 8), seed=2)
    mask = np.random.default_rng(3).random((3, 5)) > 0.4
    mask[1] = False
    for attn_mask in (mask, np.where(mask, 0.5, -np.inf).astype(np.float32)):
        _same_bits(F.scaled_dot_product_attention, ml.nn.functional.scaled_dot_product_attention, arrays,
                   attn_mask=attn_mask, dropout_p=0.3, enable_gqa=True)


def test_sdpa_4d_with_a_learned_mask_is_torchs_math_kernel():
    """A mask that requires grad (ALiBi's slopes, T5's relative bias) sends torch's 4-D call to its math kernel (even
    under no_grad): its values and every gradient, the mask's included, are that kernel's."""
    arrays = _draw((2, 3, 5, 8), (2, 3, 5, 8), (2, 3, 5, 8), (5, 5), seed=14)
    _same_bits(F.scaled_dot_product_attention, ml.nn.functional.scaled_dot_product_attention, arrays)
    q, k, v, mask = arrays
    with torch.no_grad():
        theirs = F.scaled_dot_product_attention(*map(torch.tensor, (q, k, v)), torch.tensor(mask).requires_grad_())
    with ml.no_grad():
        ours = ml.nn.functional.scaled_dot_product_attention(*map(ml.tensor, (q, k, v)), ml.tensor(mask).requires_grad_())
    assert theirs.numpy().tobytes() == ours.numpy().tobytes()


def test_sdpa_3d_float16_computes_in_float32_as_torch():
    """16-bit inputs on the math kernel: its ops in float32, the output (and each gradient) rounded once."""
    arrays = _draw((4, 9, 16), (4, 12, 16), (4, 12, 16), seed=4)

    def in_float16(lib):
        return lambda q, k, v: lib.nn.functional.scaled_dot_product_attention(
            q.to(lib.float16), k.to(lib.float16), v.to(lib.float16), is_causal=True)
    _same_bits(in_float16(torch), in_float16(ml), arrays)


# ---- the addmm family's gradients: derivatives.yaml's product, then alpha ----------------------------------------
@pytest.mark.parametrize("input_shape", [(5, 5, 10), (1,), ()], ids=str)
def test_baddbmm_gradients_scale_after_the_product(input_shape):
    """Bloom's and GPT-2's attention scores: ``baddbmm(bias, q, k^T, beta=b, alpha=scale)``. torch's batch gradients
    are ``(g @ other^T) * alpha`` (the small bmm is ATen's loop), the input's ``g * beta`` summed to its shape."""
    arrays = _draw(input_shape, (5, 5, 5), (5, 5, 10), seed=5)
    for lib_kwargs in (dict(beta=0.2, alpha=0.6), dict(beta=1, alpha=0.125)):
        _same_bits(lambda i, a, b: torch.baddbmm(i, a, b, **lib_kwargs),
                   lambda i, a, b: ml.baddbmm(i, a, b, **lib_kwargs), arrays)


def test_addbmm_batch_gradients_are_torchs_bmm():
    """addbmm's batch gradients: ``bmm(g expanded over the batch, other^T) * alpha`` (its values are MKL's addmm, one
    batch after another: not compared here)."""
    inp, b1, b2 = _draw((5, 10), (5, 5, 5), (5, 5, 10), seed=6)
    w = np.random.default_rng(8).standard_normal((5, 10)).astype(np.float32)
    grads = []
    for lib in (torch, ml):
        leaves = [lib.tensor(a).requires_grad_() for a in (inp, b1, b2)]
        out = lib.addbmm(leaves[0], leaves[1], leaves[2], beta=0.6, alpha=0.2)
        grads.append([g.numpy() for g in lib.autograd.grad((out * lib.tensor(w)).sum(), leaves)])
    for a, b in zip(*grads):
        assert (a.view(np.int32) == b.view(np.int32)).all()


# ---- elementwise: the kernels torch runs inside its backward formulas ---------------------------------------------
@pytest.mark.parametrize("name", ["sinh", "cosh"])
def test_sinh_and_cosh_gradients_take_torchs_kernel_for_the_other(name):
    """sinh's gradient is ``g * self.cosh()`` (cosh's: ``g * self.sinh()``): torch's kernel, SLEEF's in whole
    vectors and C's coshf/sinhf in the loop's tail (the last n % 32), not a correctly rounded stand-in."""
    x, = _draw((20,), seed=9)
    _same_bits(getattr(torch, name), getattr(ml, name), [x * np.float32(3)])


def test_pow_of_a_zero_dim_exponent_differentiates_with_torchs_pow_kernel():
    """``x ** e`` with ``e`` a 0-d tensor: the gradient's ``x.pow(e - 1)`` is torch's pow kernel of a tensor exponent
    (C's powf on a short tensor) -- ``e - 1`` stayed a 0-d tensor (it became a NumPy scalar: NumPy's float32 power)."""
    rng = np.random.default_rng(10)
    x, e = (rng.random(5) * 9).astype(np.float32), np.array(6.305802, np.float32)
    _same_bits(torch.pow, ml.pow, [x, e])


def test_logit_clamps_to_one_minus_eps_computed_in_float32():
    """torch's logit kernel clamps to ``[eps, 1 - eps]`` with ``1 - eps`` computed in the dtype (float32(1) - float32(eps)),
    which here is one ulp below float32(1 - eps): logit(1, eps) differed."""
    eps = 0.47523184816296765
    x = torch.tensor([1.0, 0.0, 0.5, 0.9])
    assert torch.logit(x, eps).numpy().tobytes() == ml.logit(ml.tensor(x.numpy()), eps).numpy().tobytes()


# ---- pow: SLEEF's powf in the vectorized body -----------------------------------------------------------------------
@pytest.mark.parametrize("head_dim,theta", [(96, 10000.0), (128, 1000000.0), (256, 10000.0)])
def test_rope_inverse_frequencies_are_torchs(head_dim, theta):
    """transformers' ``1.0 / (theta ** (arange(0, d, 2).float() / d))``: a number to a tensor power is SLEEF's powf in
    whole vectors (C's powf in the tail); the correctly rounded power minilora gave was one ulp off in one frequency
    of Qwen2's (d 128, theta 1e6), so every rotated q and k differed."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    theirs = 1.0 / (theta ** exponents)
    ours = 1.0 / (theta ** ml.tensor(exponents.numpy()))
    assert theirs.numpy().tobytes() == ours.numpy().tobytes()


def test_pow_of_a_number_exponent_is_sleefs_in_vectors_and_double_pow_in_the_tail():
    """``x ** 1.7``: SLEEF's powf of float32(1.7) on whole vectors, the scalar lambda's pow in double (the exponent 1.7
    itself) on the last n % 32 and on every element of a strided input."""
    x = (np.random.default_rng(11).random(32 * 20 + 31) * 9).astype(np.float32)
    for view in (slice(None), slice(None, None, 2)):
        theirs = (torch.from_numpy(x)[view] ** 1.7).numpy()
        ours = (ml.tensor(x)[view] ** 1.7).numpy()
        assert theirs.tobytes() == ours.tobytes()


def test_pow_of_tensors_is_sleefs_special_values_included():
    """Two tensors: SLEEF's powf on whole vectors (the correctly rounded power was ~2% of elements an ulp off), its
    special cases too (zeros and infinities to odd, even, fractional and infinite powers, subnormal results)."""
    rng = np.random.default_rng(12)
    base = np.array([0, -0.0, np.inf, -np.inf, 0.5, -2, 1, 5.3e11, 3], np.float32)
    exponent = np.array([-3, 3, -1, 3, np.inf, -np.inf, np.nan, -4.06, -0.5], np.float32)
    x = np.concatenate([np.repeat(base, 32), (rng.random(2048) * 9).astype(np.float32)])
    y = np.concatenate([np.tile(exponent, 32), (rng.standard_normal(2048) * 3).astype(np.float32)])
    theirs = torch.pow(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    ours = ml.pow(ml.tensor(x), ml.tensor(y)).numpy()
    assert np.array_equal(np.isnan(theirs), np.isnan(ours))
    assert np.array_equal(theirs.view(np.int32)[~np.isnan(theirs)], ours.view(np.int32)[~np.isnan(theirs)])


def test_sleef_pow_compiled_and_numpy_port_agree():
    """float32_math.sleef_pow's C kernel and its NumPy port (what runs without a compiler): the same bits on bases
    and exponents over float32's range, signs, whole and odd exponents, zeros, infinities and NaN."""
    from minilora import float32_math
    rng = np.random.default_rng(13)
    x = (np.exp(rng.standard_normal(20000) * 8) * np.sign(rng.standard_normal(20000))).astype(np.float32)
    y = (rng.standard_normal(20000) * 4).astype(np.float32)
    y[::3] = np.round(y[::3])
    x[:9], y[9:18] = [0, -0.0, np.inf, -np.inf, np.nan, 1, -1, 1e-42, 3e38], [0, -0.0, np.inf, -np.inf, np.nan, 1, -1,
                                                                             1e30, -1e30]
    compiled = float32_math.sleef_pow(x, y)
    with float32_math.numpy_port():
        port = float32_math.sleef_pow(x, y)
    assert np.array_equal(compiled.view(np.int32), port.view(np.int32))


@pytest.mark.parametrize("name", ["sinh", "cosh"])
def test_sinh_and_cosh_values_are_sleefs(name):
    """torch.sinh / torch.cosh of float32: SLEEF's sinhf/coshf (double-float (e -+ 1/e) / 2, infinite past 89) on whole
    vectors, C's in the tail; the correctly rounded stand-in was 0.1-0.4% of elements an ulp off. Compiled and NumPy
    port alike."""
    from minilora import float32_math
    x = (np.random.default_rng(15).standard_normal(4096 + 17) * 5).astype(np.float32)
    x[:4] = [0, -0.0, 89.2, -89.3]
    theirs = getattr(torch, name)(torch.from_numpy(x)).numpy()
    assert theirs.tobytes() == getattr(ml, name)(ml.tensor(x)).numpy().tobytes()
    with float32_math.numpy_port():
        assert theirs.tobytes() == getattr(ml, name)(ml.tensor(x)).numpy().tobytes()


def test_atanh_values_are_sleefs():
    """torch.atanh of float32: SLEEF's atanhf (logk2f of (1 + y) / (1 - y) in double-float, halved) on whole vectors,
    C's in the tail; the correctly rounded stand-in was ~0.2% of elements an ulp off. Compiled and NumPy port alike."""
    from minilora import float32_math
    x = ((np.random.default_rng(16).random(4096 + 13) * 2 - 1) * 0.999).astype(np.float32)
    x[:5] = [0, -0.0, 1, -1, 1e-30]
    theirs = torch.atanh(torch.from_numpy(x)).numpy()
    assert theirs.tobytes() == ml.atanh(ml.tensor(x)).numpy().tobytes()
    with float32_math.numpy_port():
        assert theirs.tobytes() == ml.atanh(ml.tensor(x)).numpy().tobytes()


def test_atan2_values_are_sleefs():
    """torch.atan2 of float32: SLEEF's atan2f_u10 (a double-float quotient and polynomial, the quadrant added in
    double-float) on whole vectors, C's atan2f in the tail; the correctly rounded stand-in was 2.4% of randn's
    elements an ulp off. Special cases (signed zeros, infinities, subnormal x) included; compiled and port alike."""
    from minilora import float32_math
    rng = np.random.default_rng(17)
    y, x = (rng.standard_normal(4096 + 21).astype(np.float32) for _ in range(2))
    y[:9], x[:9] = [0, -0.0, np.inf, -np.inf, 1, 0, np.inf, 1e-40, -0.0], [-1, -0.0, np.inf, -np.inf, 0, 0, 1, 1e-40, 2]
    theirs = torch.atan2(torch.from_numpy(y), torch.from_numpy(x)).numpy()
    assert theirs.tobytes() == ml.atan2(ml.tensor(y), ml.tensor(x)).numpy().tobytes()
    with float32_math.numpy_port():
        assert theirs.tobytes() == ml.atan2(ml.tensor(y), ml.tensor(x)).numpy().tobytes()
