"""Complex tensors side by side with torch (round 8): Meta's Llama rotary embedding (torch.polar,
view_as_complex, a complex product, view_as_real) forward and backward, promotion, printing, views that
write through, torch's gradient convention for complex numbers (float64 / complex128), the ops torch
refuses for complex inputs, complex random draws and initialisation, torch.fft (FNet, Hyena) with its
gradients, and an engine bug found on the way (a leaf used twice through additions)."""
import warnings

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")


def _np(t):
    t = t.detach()
    return t.resolve_conj().numpy() if hasattr(t, "resolve_conj") else t.numpy()


def _same_dtype(got, want):
    return str(got.dtype).split(".")[-1] == str(want.dtype).split(".")[-1]


# ---- Meta's llama/model.py rotary embedding, verbatim but for the module ------------------------------
def _precompute_freqs_cis(T, dim, end, theta=10000.0, dtype=None):
    freqs = 1.0 / (theta ** (T.arange(0, dim, 2)[: (dim // 2)].to(dtype) / dim))
    t = T.arange(end, device=freqs.device)
    freqs = T.outer(t, freqs).to(dtype)
    return T.polar(T.ones_like(freqs), freqs)


def _reshape_for_broadcast(freqs_cis, x):
    ndim = x.ndim
    shape = [d if i == 1 or i == ndim - 1 else 1 for i, d in enumerate(x.shape)]
    return freqs_cis.view(*shape)


def _apply_rotary_emb(T, xq, xk, freqs_cis, dtype):
    xq_ = T.view_as_complex(xq.to(dtype).reshape(*xq.shape[:-1], -1, 2))
    xk_ = T.view_as_complex(xk.to(dtype).reshape(*xk.shape[:-1], -1, 2))
    freqs_cis = _reshape_for_broadcast(freqs_cis, xq_)
    xq_out = T.view_as_real(xq_ * freqs_cis).flatten(3)
    xk_out = T.view_as_real(xk_ * freqs_cis).flatten(3)
    return xq_out.type_as(xq), xk_out.type_as(xk)


def _rope(T, dtype_name):
    dtype = getattr(T, dtype_name)
    rng = np.random.default_rng(0)
    xq = T.tensor(rng.standard_normal((2, 5, 3, 8)), dtype=dtype, requires_grad=True)
    xk = T.tensor(rng.standard_normal((2, 5, 3, 8)), dtype=dtype, requires_grad=True)
    fc = _precompute_freqs_cis(T, 8, 5, dtype=dtype)
    a, b = _apply_rotary_emb(T, xq, xk, fc, dtype)
    (a.sum() * 2 + (b * b).sum()).backward()
    return fc, a, b, xq.grad, xk.grad


@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-6), ("float64", 1e-13)])
def test_meta_llama_rotary_embedding_forward_and_backward_as_torch(dtype, rtol):
    got, want = _rope(ml, dtype), _rope(torch, dtype)
    for g, w in zip(got, want):
        assert _same_dtype(g, w) and tuple(g.shape) == tuple(w.shape)
        np.testing.assert_allclose(_np(g), _np(w), rtol=rtol, atol=rtol)
    assert got[0].dtype == (ml.complex64 if dtype == "float32" else ml.complex128)


def test_meta_llama_rotary_embedding_script_prints_torch_numbers():
    """/tmp/metarope.py's exact program (float32, torch.randn's seeded stream)."""
    def run(T):
        T.manual_seed(0)
        xq = T.randn(2, 5, 3, 8, requires_grad=True)
        xk = T.randn(2, 5, 3, 8, requires_grad=True)
        fc = _precompute_freqs_cis(T, 8, 5, dtype=T.float32)
        a, b = _apply_rotary_emb(T, xq, xk, fc, T.float32)
        (a.sum() * 2 + (b * b).sum()).backward()
        return a.sum().item(), xq.grad.sum().item(), xk.grad.abs().sum().item()
    np.testing.assert_allclose(run(ml), run(torch), rtol=1e-5)


def test_polar_takes_cos_and_sin_as_torchs_cpu_kernel_does():
    """torch's polar computes cosf/sinf of each float32 angle; NumPy's float32 cos/sin differ from those in the
    last bit for ~15% of Llama's angles, float64 ones rounded to float32 for ~2.5% (1 ulp at most)."""
    freqs = 1.0 / (10000.0 ** (np.arange(0, 128, 2)[:64].astype(np.float32) / 128))
    angles = np.outer(np.arange(2048), freqs).astype(np.float32)
    got = _np(ml.polar(ml.ones(angles.shape), ml.tensor(angles)))
    want = _np(torch.polar(torch.ones(angles.shape), torch.tensor(angles)))
    assert np.mean(got != want) < 0.04 and np.abs(got - want).max() <= 2 ** -23
    np.testing.assert_array_equal(_np(_precompute_freqs_cis(ml, 8, 5, dtype=ml.float32)),
                                  _np(_precompute_freqs_cis(torch, 8, 5, dtype=torch.float32)))
    angles64 = angles.astype(np.float64) * 1.1
    np.testing.assert_array_equal(_np(ml.polar(ml.ones(angles.shape, dtype=ml.float64), ml.tensor(angles64))),
                                  _np(torch.polar(torch.ones(angles.shape, dtype=torch.float64), torch.tensor(angles64))))


# ---- dtypes, promotion, printing -----------------------------------------------------------------------
PROMOTIONS = [
    "T.ones(2) * 1j", "T.ones(2, dtype=T.float64) * 1j", "T.ones(2, dtype=T.float64) * T.ones(2, dtype=T.complex64)",
    "T.ones(2, dtype=T.int64) * T.ones(2, dtype=T.complex64)", "T.arange(3) * (1 + 2j)", "T.arange(3) + 1j",
    "T.ones(2) * T.tensor(2j, dtype=T.complex128)", "T.ones(2, dtype=T.complex64) * T.tensor(2., dtype=T.float64)",
    "T.tensor([1, 3]) / T.tensor([1j, 2])", "T.tensor([1 + 2j, 3]) + T.tensor([1., 2], dtype=T.float64)",
    "T.tensor(1 + 2j)", "T.tensor([1 + 2j, 3])", "T.full((2,), 1j)", "T.full((2,), 2, dtype=T.complex64)",
    "T.tensor([3., 4]).to(T.complex128)", "T.tensor([3 + 4j]).to(T.complex128).to(T.complex64)",
    "T.tensor([3., 4]).cfloat()", "T.tensor([3 + 4j, 1j]).cdouble()", "T.tensor([3 + 4j, 1j]).abs()",
    "T.tensor([3 + 4j, 1j], dtype=T.complex128).real", "T.tensor([3 + 4j, 1j]).imag",
    "T.tensor([1 + 2j, 3], dtype=T.complex128).var()", "T.tensor([1 + 2j, 3, 1j]).std(0)",
    "T.tensor([1 + 2j, 3]).logsumexp(0)", "T.tensor([3 + 4j, 1j]).norm()", "T.linalg.vector_norm(T.tensor([3 + 4j, 1j]))",
    "T.vdot(T.tensor([3 + 4j, 1j]), T.tensor([1j, 2]))", "T.tensor([[3 + 4j, 1j]]).mH", "T.tensor([[3 + 4j, 1j]]).H",
    "T.tensor([[3 + 4j, 1j]]).adjoint()", "T.adjoint(T.tensor([[3 + 4j, 1j]]))", "T.tensor([3 + 4j, 1j]).conj_physical()",
    "T.where(T.tensor([True, False]), T.tensor([3 + 4j, 1j]), 0)", "T.tensor([3 + 4j, 0]).sgn()",
    "T.tensor([1 + 2j, 3]).sum(dtype=T.complex128)", "T.promote_types(T.float64, T.complex64)",
    "T.result_type(T.ones(2, dtype=T.float64), 1j)", "T.tensor([1 + 2j, 3]).mul_(2j)",
    "T.tensor([3 + 4j, 1j]).conj().resolve_conj()", "T.resolve_conj(T.tensor([1j]).conj()).resolve_neg()",
]


@pytest.mark.parametrize("code", PROMOTIONS)
def test_complex_values_and_dtypes_as_torch(code):
    want, got = eval(code, {"T": torch}), eval(code, {"T": ml})
    if not hasattr(want, "shape"):  # a dtype
        assert str(got).split(".")[-1] == str(want).split(".")[-1]
        return
    assert _same_dtype(got, want) and tuple(got.shape) == tuple(want.shape), (got, want)
    np.testing.assert_allclose(_np(got), _np(want), rtol=1e-6)


@pytest.mark.parametrize("code", ["T.tensor([1.5 + 2j, -3]).float()", "T.tensor([1.5 + 2j, -3.7]).to(T.int64)",
                                  "T.tensor([1.5 + 2j]).half()", "T.tensor([1.5 + 2j]).to(T.float64)"])
def test_a_complex_tensor_cast_to_a_real_dtype_keeps_the_real_part_with_torchs_warning(code):
    with warnings.catch_warnings():  # (torch warns once per process: TORCH_WARN_ONCE)
        warnings.simplefilter("ignore")
        want = eval(code, {"T": torch})
    with pytest.warns(UserWarning, match="Casting complex values to real discards the imaginary part"):
        got = eval(code, {"T": ml})
    assert _same_dtype(got, want)
    np.testing.assert_array_equal(_np(got), _np(want))


def test_a_complex_tensor_cast_to_bool_is_true_where_either_part_is_not_zero():
    assert ml.tensor([1j, 0, 2]).bool().tolist() == torch.tensor([1j, 0, 2]).bool().tolist() == [True, False, True]


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_finfo_of_a_complex_dtype_is_its_parts(dtype):
    assert repr(ml.finfo(getattr(ml, dtype))) == repr(torch.finfo(getattr(torch, dtype)))
    assert ml.finfo(getattr(ml, dtype)).bits == torch.finfo(getattr(torch, dtype)).bits


def test_default_complex_dtype_follows_the_default_float_dtype():
    try:
        torch.set_default_dtype(torch.float64)
        ml.set_default_dtype(ml.float64)
        assert str(torch.ones(2).mul(1j).dtype) == "torch.complex128" == f"torch.{ml.ones(2).mul(1j).dtype}"
        assert ml.full((1,), 1j).dtype == ml.complex128
    finally:
        torch.set_default_dtype(torch.float32)
        ml.set_default_dtype(ml.float32)


@pytest.mark.parametrize("code", [
    "T.tensor([1 + 2j, 3 - 4.5j])", "T.tensor([1.5 + 2j, 3 - 4.5j], dtype=T.complex128)", "T.tensor(1 + 2j)",
    "T.zeros(2, 2, dtype=T.complex64)", "T.tensor([1e10 + 2j, 3 - 4.5j])", "T.tensor([0.001 + 2j, 3 - 4.5j])",
    "T.tensor([float('nan') + 2j, float('inf') - 4.5j])", "T.tensor([1 + 2j, 3], requires_grad=True)"])
def test_complex_tensors_print_as_torch(code):
    want, got = eval(code, {"T": torch}), eval(code, {"T": ml})
    assert repr(got) == repr(want) and str(got) == str(want)


# ---- views ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [
    "z = T.tensor([1 + 2j, 3 - 4j]); z.real[0] = 10",
    "z = T.tensor([1 + 2j, 3 - 4j]); z.imag.mul_(2)",
    "z = T.tensor([1 + 2j, 3 - 4j], dtype=T.complex128); T.view_as_real(z)[1, 1] = 7",
    "z = T.tensor([[1 + 2j, 3 - 4j], [5j, 6]]).t(); T.view_as_real(z)[0].zero_()",
    "x = T.arange(8.).reshape(2, 4); z = T.view_as_complex(x.reshape(2, 2, 2)); z[0, 0] = 5j; z = x",
    "x = T.arange(8.).reshape(4, 2); z = T.view_as_complex(x[::2]); z.mul_(1j); z = x"])
def test_real_imag_and_view_as_real_complex_are_views(code):
    def run(T):
        scope = {"T": T}
        exec(code, scope)
        return _np(scope["z"])
    np.testing.assert_array_equal(run(ml), run(torch))


@pytest.mark.parametrize("code", [
    "T.view_as_complex(T.arange(9.)[1:].reshape(4, 2))", "T.view_as_complex(T.arange(8.).reshape(2, 4).t())",
    "T.view_as_complex(T.arange(12.).reshape(3, 4)[:, :3:2])", "T.view_as_complex(T.tensor(2.))",
    "T.view_as_complex(T.arange(8.).reshape(2, 4))", "T.view_as_complex(T.arange(4).reshape(2, 2))",
    "T.view_as_real(T.ones(2))", "T.complex(T.ones(2), T.ones(2, dtype=T.float64))",
    "T.complex(T.ones(2, dtype=T.int64), T.ones(2, dtype=T.int64))", "T.polar(T.ones(2), T.ones(2, dtype=T.int64))",
    "T.polar(T.ones(2, dtype=T.float64), T.ones(2))"])
def test_view_as_complex_complex_and_polar_refuse_in_torchs_words(code):
    with pytest.raises(RuntimeError) as want:
        eval(code, {"T": torch})
    with pytest.raises(RuntimeError) as got:
        eval(code, {"T": ml})
    assert str(got.value) == str(want.value)


def test_view_as_complex_of_a_strided_tensor_is_the_values_torch_reads():
    def run(T):
        return _np(T.view_as_complex(T.arange(24.).reshape(4, 6)[1:, 2:4]))
    np.testing.assert_array_equal(run(ml), run(torch))


def test_in_place_changes_through_complex_views_are_differentiated():
    def run(T):
        a = T.tensor([1 + 2j, 3 - 1j], dtype=T.complex128, requires_grad=True)
        z = a * (2 - 1j)
        z.real.mul_(3)
        z.imag[0] = 5
        T.view_as_real(z)[1, 1] = 7
        (z * z).abs().sum().backward()
        x = T.tensor([[1., 2], [3, 4]], dtype=T.float64, requires_grad=True)
        y = x * 1
        T.view_as_complex(y)[0] *= 1j
        (y * T.tensor([[1., 2], [3, 4]], dtype=T.float64)).sum().backward()
        return _np(z), _np(a.grad), _np(y), _np(x.grad)
    for g, w in zip(run(ml), run(torch)):
        np.testing.assert_allclose(g, w, rtol=1e-12)


# ---- torch's complex gradients (complex128 against torch) ---------------------------------------------
GRADIENTS = {
    "mul": lambda T, a, b: a * b, "div": lambda T, a, b: a / b, "add-sub-neg": lambda T, a, b: -a - b + a * 2,
    "exp": lambda T, a, b: a.exp() * b, "log": lambda T, a, b: a.log(), "sqrt": lambda T, a, b: a.sqrt(),
    "sin-cos": lambda T, a, b: a.sin() + a.cos(), "tanh": lambda T, a, b: a.tanh(), "sigmoid": lambda T, a, b: a.sigmoid(),
    "pow": lambda T, a, b: a ** 2 + a ** b, "reciprocal": lambda T, a, b: a.reciprocal() + a.rsqrt(),
    "square": lambda T, a, b: a.square(), "sinh-atan": lambda T, a, b: a.sinh() + a.atan(),
    "abs": lambda T, a, b: a.abs() * b, "angle": lambda T, a, b: a.angle() * b, "conj": lambda T, a, b: a.conj() * b,
    "conj_physical": lambda T, a, b: T.conj_physical(a) * b, "sum-mean": lambda T, a, b: (a * b).sum(0) + a.mean(),
    "prod-cumsum": lambda T, a, b: a.prod() + a.cumsum(0) + a.cumprod(0),
    "matmul": lambda T, a, b: a.reshape(3, 2) @ b.reshape(2, 3), "linear": lambda T, a, b: T.nn.functional.linear(
        a.reshape(2, 3), b.reshape(2, 3)), "einsum": lambda T, a, b: T.einsum("i,i->", a, b),
    "dot-vdot-outer": lambda T, a, b: T.outer(a, b).sum() + T.dot(a, b) + T.vdot(a, b),
    "reshape-view-flatten": lambda T, a, b: a.reshape(3, 2).t().flatten() * b.view(6),
    "transpose-index": lambda T, a, b: a.reshape(2, 3).transpose(0, 1)[1:] * 2 + a[[0, 2, 2]].sum(),
    "view_as_real-complex": lambda T, a, b: T.view_as_complex(T.view_as_real(a) * T.view_as_real(b)),
    "real-imag": lambda T, a, b: a.real * b.imag, "mixed with real": lambda T, a, b: a.real * (1 + 2j) * b,
    "stack-cat-where": lambda T, a, b: T.stack([a, T.cat([b[3:], b[:3]])]) + T.where(a.real > 0, a, b),
    "gather-index_select-pad": lambda T, a, b: a.gather(0, T.tensor([1, 1, 0])).sum() + T.nn.functional.pad(
        a.index_select(0, T.tensor([2, 0])), (1, 2)),
    "norm": lambda T, a, b: a.norm() + T.linalg.vector_norm(b, 3), "var-std": lambda T, a, b: a.var() + b.std(),
    "logsumexp": lambda T, a, b: a.reshape(2, 3).logsumexp(1), "to complex64": lambda T, a, b: a.to(T.complex64) * 2,
    "sgn": lambda T, a, b: a.sgn() * b, "log1p-expm1-log2": lambda T, a, b: a.log1p() + a.expm1() + a.log2(),
    "float_power": lambda T, a, b: T.float_power(a, 2), "add/sub alpha": lambda T, a, b: T.add(a, b, alpha=2.5) - T.sub(
        a, b, alpha=-1.5), "addcmul-addcdiv": lambda T, a, b: T.addcmul(a, a, b, value=0.5) + T.addcdiv(a, a, b, value=2),
    "index_copy-fill-masked_scatter": lambda T, a, b: a.index_copy(0, T.tensor([1, 3]), b[:2]).index_fill(
        0, T.tensor([0]), 2.).masked_scatter(T.tensor([True, False] * 3), b),
    "repeat-scatter-index_add": lambda T, a, b: a.repeat(2)[3:9].index_add(0, T.tensor([1, 1]), b[:2]) + T.zeros(
        6, dtype=a.dtype).scatter(0, T.tensor([1, 0, 2]), b[:3]),
    "cov-corrcoef": lambda T, a, b: T.cov(T.stack([a, b])) + T.corrcoef(T.stack([a, b * a])),
    "conv1d-conv2d": lambda T, a, b: T.nn.functional.conv1d(a.reshape(1, 1, 6), b[:3].reshape(1, 1, 3)).sum()
        + T.nn.functional.conv2d(a.reshape(1, 1, 2, 3), b[:4].reshape(1, 1, 2, 2), padding=1).sum(),
}


@pytest.mark.parametrize("name", list(GRADIENTS))
def test_complex_gradients_as_torch(name):
    def run(T):
        rng = np.random.default_rng(abs(hash(name)) % 2**32)
        a, b = (T.tensor(rng.standard_normal(6) + 1j * rng.standard_normal(6), requires_grad=True) for _ in range(2))
        out = GRADIENTS[name](T, a, b)
        w1, w2 = (T.tensor(rng.standard_normal(tuple(out.shape))) for _ in range(2))
        loss = (out.real * w1 + out.imag * w2).sum() + (out.abs() ** 2).sum() if out.is_complex() else (out * w1).sum()
        loss.backward()
        return out, a.grad, b.grad
    for g, w in zip(run(ml), run(torch)):
        if w is None:
            assert g is None
            continue
        assert _same_dtype(g, w)
        tolerance = 1e-5 if name == "to complex64" else 1e-10  # (complex64 arithmetic in between)
        np.testing.assert_allclose(_np(g), _np(w), rtol=tolerance, atol=tolerance / 100)


def test_polar_and_complex_gradients_reach_their_real_inputs():
    def run(T):
        r = T.tensor([1., 2, 0.5], dtype=T.float64, requires_grad=True)
        theta = T.tensor([0.3, -2., 4], dtype=T.float64, requires_grad=True)
        re, im = (T.tensor([1., -2, 3], dtype=T.float64, requires_grad=True) for _ in range(2))
        z = T.polar(r, theta) * T.complex(re, im)
        (z * z.conj()).real.sum().backward()
        (T.polar(r, theta).angle().sum() + T.complex(re, im).abs().sum()).backward()
        return z, r.grad, theta.grad, re.grad, im.grad, T.polar(r, theta).grad_fn.name()
    got, want = run(ml), run(torch)
    for g, w in zip(got[:-1], want[:-1]):
        assert _same_dtype(g, w)
        np.testing.assert_allclose(_np(g), _np(w), rtol=1e-12)
    assert got[-1] == want[-1] == "PolarBackward0"


# ---- what torch refuses for complex numbers ------------------------------------------------------------
REFUSED = ["z < 1", "T.ones(2) >= z", "z.relu()", "z.clamp(0, 1)", "z.clamp(max=1)", "z.max()", "z.min(0)", "z.amax()",
           "z.argmax()", "T.maximum(z, z)", "z.sort()", "z.topk(1)", "z.argsort()", "z.floor()", "z.ceil()", "z.round()",
           "z.trunc()", "z.sign()", "z % 2", "z.fmod(2)", "z // 2", "z.median()", "z.erf()", "z.abs_()",
           "T.nn.functional.gelu(z)", "T.nn.functional.leaky_relu(z)", "T.nn.functional.layer_norm(z, (2,))",
           "z.softmax(0)", "T.zeros(2)[0:1].fill_(1 + 1j)", "T.tensor([1., 3]).mul_(2j)", "T.xlogy(z, z)", "z.logit()",
           "T.atan2(z, z)", "z.cummax(0)", "z.frac()", "T.deg2rad(z)", "T.rad2deg(z)", "T.unique(z)",
           "T.unique_consecutive(z)", "T.mode(z)", "T.nansum(z)", "T.full((2,), 1 + 2j, dtype=T.float32)"]


@pytest.mark.parametrize("code", REFUSED)
def test_ops_without_complex_kernels_refuse_as_torch(code):
    """torch's exception type; minilora's message names the op (NumPy orders complex numbers lexicographically
    and rounds each part, so these computed something before)."""
    with pytest.raises(Exception) as want:
        eval(code, {"T": torch, "z": torch.tensor([1 + 2j, 3 - 1j])})
    with pytest.raises(want.type) as got:
        eval(code, {"T": ml, "z": ml.tensor([1 + 2j, 3 - 1j])})
    assert "ufunc" not in str(got.value) and "iinfo" not in str(got.value) and "float() argument" not in str(got.value)


def test_a_complex_number_into_a_real_tensor_needs_no_imaginary_part():
    for T in (torch, ml):
        z = T.zeros(2)
        z[0] = 1 + 0j
        assert z.tolist() == [1.0, 0.0]
        with pytest.raises(RuntimeError, match="cannot be converted to type float without overflow"):
            z[1] = 1 + 1j


def test_a_complex_gradient_reaching_an_op_without_a_complex_rule_names_it():
    """minilora's own op classes say how they take complex gradients (Function.complex_grad); one that does
    not say is refused at backward, naming it, rather than handed a gradient its formula was not written for."""
    from minilora.tensor import Function

    class RealSquare(Function):
        @staticmethod
        def forward(ctx, a):
            ctx.a = a
            return a * a

        @staticmethod
        def backward(ctx, g):
            return 2 * g * ctx.a

    z = ml.tensor([1 + 2j, 3 - 1j], requires_grad=True)
    with pytest.raises(NotImplementedError, match="no complex derivative for RealSquare"):
        RealSquare.apply(z).real.sum().backward()


def test_a_custom_autograd_function_gets_complex_gradients_as_in_torch():
    def run(T):
        class Double(T.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, g):
                return g * 2
        z = T.tensor([1 + 2j, 3 - 1j], requires_grad=True)
        (Double.apply(z) * (1 + 1j)).real.sum().backward()
        return _np(z.grad)
    np.testing.assert_array_equal(run(ml), run(torch))


# ---- random draws ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3,), (4, 5), (2, 20)])
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_rand_and_randn_draw_torchs_numbers(shape, dtype):
    def run(T):
        T.manual_seed(7)
        return _np(T.randn(*shape, dtype=getattr(T, dtype))), _np(T.rand(shape, dtype=getattr(T, dtype)))
    for g, w in zip(run(ml), run(torch)):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


# ---- torch.fft (FNet's token mixing, Hyena's FFT convolution) ----------------------------------------
FFTS = {
    "fft": lambda T, x: T.fft.fft(x), "fft n=8": lambda T, x: T.fft.fft(x, n=8), "fft 3 ortho": lambda T, x: T.fft.fft(
        x, 3, norm="ortho"), "fft forward": lambda T, x: T.fft.fft(x, norm="forward"),
    "ifft": lambda T, x: T.fft.ifft(x), "ifft n=7 ortho": lambda T, x: T.fft.ifft(x, 7, norm="ortho"),
    "rfft": lambda T, x: T.fft.rfft(x.real), "rfft n=9": lambda T, x: T.fft.rfft(x.real, n=9),
    "irfft": lambda T, x: T.fft.irfft(x), "irfft n=7": lambda T, x: T.fft.irfft(x, n=7),
    "irfft n=4 forward": lambda T, x: T.fft.irfft(x, n=4, norm="forward"), "fft2": lambda T, x: T.fft.fft2(x.reshape(2, 3)),
    "fftn s": lambda T, x: T.fft.fftn(x.reshape(2, 3), s=(3, 4)), "ifftn dim=0": lambda T, x: T.fft.ifftn(
        x.reshape(2, 3), dim=0), "rfft2": lambda T, x: T.fft.rfft2(x.real.reshape(2, 3)),
    "irfftn s": lambda T, x: T.fft.irfftn(x.reshape(2, 3), s=(3, 5)),
    "FNet mixing": lambda T, x: T.fft.fft(T.fft.fft(x.reshape(2, 3), dim=-1), dim=-2).real,
    "Hyena convolution": lambda T, x: T.fft.irfft(T.fft.rfft(x.real, n=12) * T.fft.rfft(x.imag, n=12), n=12)[:6],
    "fftshift": lambda T, x: T.fft.ifftshift(T.fft.fftshift(T.fft.fft(x)) * 2),
}


@pytest.mark.parametrize("input_kind", ["real", "complex"])
@pytest.mark.parametrize("name", list(FFTS))
def test_fft_forward_and_gradients_as_torch(name, input_kind):
    def run(T):
        rng = np.random.default_rng(3)
        values = rng.standard_normal(6) + 1j * rng.standard_normal(6)
        x = T.tensor(values if input_kind == "complex" else values.real, requires_grad=True)
        if input_kind == "real" and name in ("rfft", "rfft n=9", "rfft2", "Hyena convolution"):
            x = T.tensor(values, requires_grad=True)  # (x.real / x.imag inside: a complex leaf)
        out = FFTS[name](T, x)
        w1, w2 = (T.tensor(rng.standard_normal(tuple(out.shape))) for _ in range(2))
        ((out.real * w1 + out.imag * w2).sum() if out.is_complex() else (out * w1).sum()).backward()
        return out, x.grad
    for g, w in zip(run(ml), run(torch)):
        assert _same_dtype(g, w) and tuple(g.shape) == tuple(w.shape)
        np.testing.assert_allclose(_np(g), _np(w), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("code", [
    "T.fft.fftfreq(5)", "T.fft.fftfreq(7, 0.3)", "T.fft.rfftfreq(6, 0.1)", "T.fft.fftfreq(4, dtype=T.float64)",
    "T.fft.rfftfreq(9, 1 / 3.)", "T.fft.fft(T.arange(4))", "T.fft.rfft(T.arange(5.))", "T.fft.irfft(T.tensor([1 + 2j, 3, 1j]))",
    "T.fft.fft(T.ones(3, 4), dim=0)", "T.fft.fftn(T.ones(2, 3, 4), s=(2, 2))", "T.fft.irfftn(T.ones(2, 3, 4, dtype=T.complex64))",
    "T.fft.fftshift(T.arange(5))", "T.fft.ifftshift(T.arange(6).reshape(2, 3))"])
def test_fft_values_dtypes_and_frequencies_as_torch(code):
    want, got = eval(code, {"T": torch}), eval(code, {"T": ml})
    assert _same_dtype(got, want) and tuple(got.shape) == tuple(want.shape)
    np.testing.assert_allclose(_np(got), _np(want), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("code", [
    "T.fft.fft(T.ones(4), norm='bad')", "T.fft.fft(T.ones(4), n=0)", "T.fft.rfft(T.ones(4, dtype=T.complex64))",
    "T.fft.fft(T.tensor(2.))", "T.fft.fft(T.ones(4, dtype=T.float16))", "T.fft.fft(T.ones(2, 3), dim=2)",
    "T.fft.fftn(T.ones(2, 3), dim=(0, 0))", "T.fft.fftn(T.ones(2, 3), s=(2, 2, 2))"])
def test_fft_refuses_in_torchs_words(code):
    with pytest.raises(Exception) as want:
        eval(code, {"T": torch})
    with pytest.raises(want.type) as got:
        eval(code, {"T": ml})
    assert str(got.value) == str(want.value)


def test_fft_nodes_are_named_as_torch():
    def names(T):
        x = T.ones(4, requires_grad=True)
        z = T.ones(4, dtype=T.complex64, requires_grad=True)
        return [f.grad_fn.name() for f in (T.fft.fft(x), T.fft.rfft(x), T.fft.irfft(z), T.fft.fft(z), T.polar(x, x),
                                             T.complex(x, x), T.view_as_real(z), T.view_as_complex(T.view_as_real(z)))]
    assert names(ml) == names(torch)


# ---- found on the way: one gradient array handed to a leaf and to another node -------------------------
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_a_leaf_used_twice_through_additions_gets_torchs_gradients(dtype):
    """``a + (a + b)``: the outer sum's backward hands one array to the leaf a (its .grad, as it is) and to
    the inner sum; a's second gradient was then added into that array in place, so b got twice its
    gradient (minilora gave b.grad = 2c for any dtype before)."""
    def run(T):
        c = T.tensor([5., 6 + 1j] if dtype == "complex128" else [5., 6], dtype=getattr(T, dtype))
        grads = []
        for f in (lambda a, b: a + (a + b), lambda a, b: (a + b) + a, lambda a, b: a - (b - a),
                  lambda a, b: T.addcdiv(a, a, b, value=2) + a, lambda a, b: T.where(c.abs() > 5, a, b) + a):
            a = T.tensor([1., 2], dtype=getattr(T, dtype), requires_grad=True)
            b = T.tensor([3., 4], dtype=getattr(T, dtype), requires_grad=True)
            out = f(a, b) * c
            (out.real if out.is_complex() else out).sum().backward()
            grads += [_np(a.grad), _np(b.grad)]
        return grads
    for g, w in zip(run(ml), run(torch)):
        np.testing.assert_allclose(g, w, rtol=1e-12)


def test_complex_parameters_initialise_and_train_a_step_as_torch():
    """torch fills a complex tensor's (real, imag) pairs (normal_: std / sqrt(2) each): nn.Linear/Embedding
    of complex64, uniform_/normal_ and nn.init on complex tensors draw torch's numbers (minilora filled the
    real parts only)."""
    def run(T):
        T.manual_seed(0)
        lin = T.nn.Linear(3, 2, dtype=T.complex64)
        emb = T.nn.Embedding(4, 3, dtype=T.complex64)
        z = T.empty(5, 4, dtype=T.complex128).normal_(1.0, 2.0)
        w = T.empty(20, dtype=T.complex64).uniform_(-1, 1)
        n = T.nn.init.normal_(T.empty(3, 17, dtype=T.complex64), 0.5, 3)
        x = T.randn(4, 3, dtype=T.complex64)
        with T.no_grad():  # (torch has no complex gradient for embedding: it refuses the call in the graph)
            rows = emb(T.tensor([0, 3]))
        lin(rows + x[:2]).abs().sum().backward()
        return [lin.weight, lin.bias, emb.weight, z, w, n, lin.weight.grad, lin.bias.grad]
    for g, w in zip(run(ml), run(torch)):
        assert _same_dtype(g, w)
        np.testing.assert_allclose(_np(g), _np(w), rtol=1e-6, atol=1e-6)
