"""Mixed precision as torch users write it (``torch.autocast``, ``torch.amp.GradScaler``), side by side
with torch 2.13: every op's dtype (and values) in a CPU autocast region, the region's state and
errors, the weight cache, gradients, a tiny Llama against transformers', a LoRA layer against PEFT's,
LSTM, custom autograd Functions, gradient checkpointing, and the scaler's sequence of scales with
injected infs. Skipped without torch."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora as ml  # noqa: E402
import minilora.nn.functional as MF  # noqa: E402
import torch.nn.functional as TF  # noqa: E402

RNG = np.random.default_rng(0)


def pair(*shape, dtype="float32", low=None):
    """The same random values as a torch and a minilora tensor of ``dtype``."""
    values = RNG.standard_normal(shape).astype(np.float32) if low is None else RNG.uniform(low, 1, shape).astype(
        np.float32)
    return torch.tensor(values).to(getattr(torch, dtype)), ml.tensor(values).to(getattr(ml, dtype))


def numpy_of(t):
    t = t.detach()
    if isinstance(t, torch.Tensor):
        return (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()
    return np.asarray((t.float() if t.dtype in (ml.bfloat16, ml.float16) else t).numpy())


def dtype_name(t):
    """A tensor's (or a dtype's) name, torch's and minilora's alike: "bfloat16"."""
    dtype = t.dtype if isinstance(t, (torch.Tensor, ml.Tensor)) else t
    return str(dtype).replace("torch.", "")


# ---- op by op: (name, call on (module, F, inputs), inputs' shapes and dtypes) ---------------------
F32, F64 = "float32", "float64"
BF, H = "low", "other"  # the region's 16-bit dtype, the other one
IDX = [2, 0, 1]  # class targets
OPS = [
    # lower precision (torch's CPU list)
    ("linear", lambda m, F, a, b, c: F.linear(a, b, c), [(3, 4, F32), (5, 4, F32), (5, F32)]),
    ("linear no bias", lambda m, F, a, b: F.linear(a, b), [(2, 3, 4, F32), (5, 4, F32)]),
    ("matmul", lambda m, F, a, b: m.matmul(a, b), [(4, 3, F32), (3, 5, F32)]),
    ("matmul 1-D x 2-D", lambda m, F, a, b: m.matmul(a, b), [(3, F32), (3, 5, F32)]),
    ("@ 3-D x 2-D", lambda m, F, a, b: a @ b, [(2, 4, 3, F32), (3, 5, F32)]),
    ("mm method", lambda m, F, a, b: a.mm(b), [(4, 3, F32), (3, 5, F32)]),
    ("mm of the other 16-bit dtype", lambda m, F, a, b: m.mm(a, b), [(4, 3, H), (3, 5, H)]),
    ("bmm", lambda m, F, a, b: m.bmm(a, b), [(2, 4, 3, F32), (2, 3, 5, F32)]),
    ("addmm", lambda m, F, a, b, c: m.addmm(a, b, c, beta=0.5, alpha=2), [(4, 5, F32), (4, 3, F32), (3, 5, F32)]),
    ("baddbmm", lambda m, F, a, b, c: m.baddbmm(a, b, c), [(2, 4, 5, F32), (2, 4, 3, F32), (2, 3, 5, F32)]),
    ("einsum contraction", lambda m, F, a, b: m.einsum("bij,bjk->bik", a, b), [(2, 4, 3, F32), (2, 3, 5, F32)]),
    ("einsum sum of products", lambda m, F, a, b: m.einsum("i,i->", a, b), [(4, F32), (4, F32)]),
    ("tensordot (torch: through mm)", lambda m, F, a, b: m.tensordot(a, b, 1), [(4, 3, F32), (3, 5, F32)]),
    ("inner (torch: through mm)", lambda m, F, a, b: m.inner(a, b), [(4, 3, F32), (5, 3, F32)]),
    ("conv1d", lambda m, F, a, b, c: F.conv1d(a, b, c, padding=1), [(2, 3, 8, F32), (4, 3, 3, F32), (4, F32)]),
    ("conv2d", lambda m, F, a, b: F.conv2d(a, b, stride=2), [(2, 3, 6, 6, F32), (4, 3, 3, 3, F32)]),
    ("conv_transpose1d", lambda m, F, a, b: F.conv_transpose1d(a, b), [(2, 3, 5, F32), (3, 4, 3, F32)]),
    ("conv_transpose2d", lambda m, F, a, b: F.conv_transpose2d(a, b), [(1, 3, 4, 4, F32), (3, 2, 3, 3, F32)]),
    ("prelu", lambda m, F, a, b: F.prelu(a, b), [(3, 4, F32), (1, F32)]),
    ("scaled_dot_product_attention", lambda m, F, a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True),
     [(1, 2, 5, 4, F32)] * 3),
    # not autocast on the CPU: their own dtypes
    ("dot", lambda m, F, a, b: m.dot(a, b), [(4, F32), (4, F32)]),
    ("mv", lambda m, F, a, b: m.mv(a, b), [(4, 3, F32), (3, F32)]),
    ("outer", lambda m, F, a, b: m.outer(a, b), [(4, F32), (3, F32)]),
    ("einsum without a sum", lambda m, F, a, b: m.einsum("i,i->i", a, b), [(4, F32), (4, F32)]),
    ("softmax of bfloat16", lambda m, F, a: F.softmax(a, dim=-1), [(3, 4, BF)]),
    ("log_softmax of float32", lambda m, F, a: F.log_softmax(a, -1), [(3, 4, F32)]),
    ("layer_norm of bfloat16", lambda m, F, a: F.layer_norm(a, (4,)), [(3, 4, BF)]),
    ("exp, sum, relu", lambda m, F, a: F.relu(m.exp(a)).sum(), [(3, 4, BF)]),
    ("cosine_similarity", lambda m, F, a, b: F.cosine_similarity(a, b), [(3, 4, BF), (3, 4, BF)]),
    ("mm of float64", lambda m, F, a, b: m.mm(a, b), [(4, 3, F64), (3, 5, F64)]),
    ("cross of the other 16-bit dtype", lambda m, F, a, b: m.cross(a, b, dim=1), [(2, 3, H), (2, 3, H)]),
    ("embedding_bag", lambda m, F, w, i: F.embedding_bag(i, w, m.tensor([0, 1])), [(5, 3, F32), [0, 2, 4]]),
    # float32 (torch's CPU list): 16-bit inputs come out float32
    ("mse_loss", lambda m, F, a, b: F.mse_loss(a, b), [(3, 4, BF), (3, 4, BF)]),
    ("l1_loss", lambda m, F, a, b: F.l1_loss(a, b, reduction="sum"), [(3, 4, BF), (3, 4, F32)]),
    ("smooth_l1_loss", lambda m, F, a, b: F.smooth_l1_loss(a, b), [(3, 4, BF), (3, 4, BF)]),
    ("huber_loss", lambda m, F, a, b: F.huber_loss(a, b, delta=0.5), [(3, 4, BF), (3, 4, BF)]),
    ("cross_entropy", lambda m, F, a, t: F.cross_entropy(a, t), [(3, 5, BF), IDX]),
    ("cross_entropy of the other 16-bit dtype", lambda m, F, a, t: F.cross_entropy(a, t, reduction="none"),
     [(3, 5, H), IDX]),
    ("nll_loss", lambda m, F, a, t: F.nll_loss(a, t), [(3, 5, BF), IDX]),
    ("kl_div", lambda m, F, a, b: F.kl_div(a, b, reduction="batchmean", log_target=True), [(3, 4, BF), (3, 4, BF)]),
    ("binary_cross_entropy_with_logits", lambda m, F, a, b: F.binary_cross_entropy_with_logits(a, b),
     [(3, 4, BF), (3, 4, BF, 0)]),
    ("binary_cross_entropy", lambda m, F, a, b: F.binary_cross_entropy(a, b), [(3, 4, BF, 0), (3, 4, BF, 0)]),
    ("margin_ranking_loss", lambda m, F, a, b, c: F.margin_ranking_loss(a, b, c.sign()),
     [(4, BF), (4, BF), (4, BF)]),
    ("triplet_margin_loss", lambda m, F, a, b, c: F.triplet_margin_loss(a, b, c), [(3, 4, BF)] * 3),
    ("cosine_embedding_loss", lambda m, F, a, b, c: F.cosine_embedding_loss(a, b, c.sign()),
     [(3, 4, BF), (3, 4, BF), (3, BF)]),
    ("soft_margin_loss", lambda m, F, a, b: F.soft_margin_loss(a, b.sign()), [(3, 4, BF), (3, 4, BF)]),
    ("hinge_embedding_loss", lambda m, F, a, b: F.hinge_embedding_loss(a, b.sign()), [(3, 4, BF), (3, 4, BF)]),
    ("poisson_nll_loss", lambda m, F, a, b: F.poisson_nll_loss(a, b), [(3, 4, BF), (3, 4, BF, 0)]),
    ("multi_margin_loss", lambda m, F, a, t: F.multi_margin_loss(a, t), [(3, 5, BF), IDX]),
    ("prod", lambda m, F, a: m.prod(a, 1), [(3, 4, BF)]),
    ("prod method with dtype", lambda m, F, a: a.prod(dtype=m.float64), [(3, 4, BF)]),
    ("quantile", lambda m, F, a: m.quantile(a, 0.3, dim=1), [(3, 4, BF)]),
    ("trace", lambda m, F, a: m.trace(a), [(4, 4, BF)]),
    ("pad reflect 1-D", lambda m, F, a: F.pad(a, (2, 1), mode="reflect"), [(2, 3, 5, BF)]),
    ("pad replicate 3-D", lambda m, F, a: F.pad(a, (1, 1, 1, 1, 1, 1), mode="replicate"), [(1, 2, 3, 4, 4, BF)]),
    ("pad reflect 3-D (not listed)", lambda m, F, a: F.pad(a, (1, 1, 1, 1, 1, 1), mode="reflect"),
     [(1, 2, 3, 4, 4, BF)]),
    ("pad constant", lambda m, F, a: F.pad(a, (1, 2), value=0.5), [(2, 3, BF)]),
    ("max_unpool2d", lambda m, F, a, i: F.max_unpool2d(a, i.reshape(1, 1, 1, 2), 2), [(1, 1, 1, 2, BF), [0, 3]]),
    # promote: the widest floating input, float64 left alone
    ("cat", lambda m, F, a, b: m.cat([a, b]), [(2, 3, BF), (2, 3, F32)]),
    ("cat of bfloat16", lambda m, F, a, b: m.cat([a, b], 1), [(2, 3, BF), (2, 3, BF)]),
    ("cat with float64", lambda m, F, a, b: m.cat([a, b]), [(2, 3, F32), (2, 3, F64)]),
    ("stack", lambda m, F, a, b: m.stack([a, b]), [(2, 3, F32), (2, 3, BF)]),
    ("index_copy", lambda m, F, a, i, b: m.index_copy(a, 0, i, b), [(3, 4, F32), [1], (1, 4, BF)]),
]


def inputs_for(specs, low="bfloat16"):
    """torch's and minilora's arguments for ``specs``: ``(*shape, dtype)``, ``(*shape, dtype, 0)`` for
    values in (0, 1) (probabilities), or a list of int64 indices."""
    torch_args, ml_args = [], []
    for spec in specs:
        if isinstance(spec, list):
            torch_args.append(torch.tensor(spec))
            ml_args.append(ml.tensor(spec))
            continue
        unit = spec[-1] == 0
        *shape, dtype = spec[:-1] if unit else spec
        other = "float16" if low == "bfloat16" else "bfloat16"
        t, m = pair(*shape, dtype={"low": low, "other": other}.get(dtype, dtype), low=0.05 if unit else None)
        torch_args.append(t)
        ml_args.append(m)
    return torch_args, ml_args


def run_both(call, specs, dtype="bfloat16"):
    torch_args, ml_args = inputs_for(specs, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (kl_div's reduction note)
        with torch.autocast("cpu", dtype=getattr(torch, dtype)):
            expected = call(torch, TF, *torch_args)
        with ml.autocast("cpu", dtype=getattr(ml, dtype)):
            got = call(ml, MF, *ml_args)
    return expected, got


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name,call,specs", OPS, ids=[op[0] for op in OPS])
def test_each_op_runs_in_torchs_dtype_with_torchs_values(name, call, specs, dtype):
    drawn_from = RNG.bit_generator.state
    expected, got = run_both(call, specs, dtype)
    assert dtype_name(got) == dtype_name(expected), name
    assert tuple(got.shape) == tuple(expected.shape)
    ulp = {"bfloat16": 2 ** -8, "float16": 2 ** -11, "float32": 1e-6, "float64": 1e-12}[dtype_name(expected)]
    if name.startswith("conv_transpose"):
        # torch's 16-bit transposed convolution is oneDNN's (float32 sums, one rounding, as minilora) only
        # on CPUs where oneDNN takes that dtype (torch.ops.mkldnn._is_mkldnn_fp16_supported(): AVX512-FP16/
        # AMX-FP16; _bf16_: AVX-512); elsewhere (float16 on an AVX-512 EPYC, both on AVX2 CPUs) its slow
        # path rounds each kernel tap's GEMM column to 16 bits and adds the taps in 16 bits (col2im): up to
        # 2 roundings per tap, each <= ulp sum |x| |w| (float16 here: 3 ulps at -3.15; bfloat16 with oneDNN
        # held to AVX2: 2 ulps at 5.7). That, plus the one rounding, is what the comparison permits.
        taps = int(np.prod(specs[1][2:-1]))
        RNG.bit_generator.state = drawn_from  # the same inputs again, for sum |x| |w| at each output
        terms = call(torch, TF, *(t.double().abs() for t in inputs_for(specs, dtype)[0])).numpy()
        error = np.abs(numpy_of(got) - numpy_of(expected))
        np.testing.assert_array_less(error, 2 * taps * ulp * terms + 2 * ulp * np.abs(numpy_of(expected)) + 1e-30)
        return
    # one rounding of the result apart at most (torch's kernels may sum in another order)
    np.testing.assert_allclose(numpy_of(got), numpy_of(expected), rtol=2 * ulp, atol=2 * ulp)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_bilinear_keeps_its_inputs_dtype_as_torch(dtype):
    """torch's bilinear is not on the list: its result keeps the inputs' dtype. (Inside, torch's
    ``_trilinear`` multiplies with two autocast ``bmm`` calls, so its values carry bfloat16 roundings,
    and so do minilora's, the same ops: round 30.)"""
    expected, got = run_both(lambda m, F, a, b, w, c: F.bilinear(a, b, w, c),
                             [(2, 3, dtype), (2, 4, dtype), (5, 3, 4, dtype), (5, dtype)])
    assert dtype_name(got) == dtype_name(expected) == dtype
    np.testing.assert_array_equal(numpy_of(got), numpy_of(expected))


def test_float64_input_to_linear_is_not_cast_and_fails_as_torch():
    """autocast leaves float64 alone: a float64 input meets a bfloat16 weight (both refuse)."""
    for lib, F in ((torch, TF), (ml, MF)):
        x, w = lib.ones(2, 3, dtype=lib.float64), lib.ones(4, 3)
        with lib.autocast("cpu"), pytest.raises(RuntimeError):
            F.linear(x, w)


def test_integer_products_and_out_are_not_cast():
    a = ml.arange(6).reshape(2, 3)
    with ml.autocast("cpu"):
        assert ml.mm(a, a.T).dtype == ml.int64
    with torch.autocast("cpu"):
        assert torch.mm(torch.arange(6).reshape(2, 3), torch.arange(6).reshape(3, 2)).dtype == torch.int64


def test_in_place_and_out_calls_are_not_autocast_as_torch():
    """torch autocasts out-of-place ops only: ``a.addmm_(b, c)`` and ``mm(a, b, out=c)`` stay float32."""
    results = {}
    for lib in (torch, ml):
        a, b = lib.ones(3, 3) / 3, lib.ones(3, 3) / 7
        with lib.autocast("cpu"):
            x = a.clone()
            x.addmm_(a, b)
            out = lib.empty(3, 3)
            lib.mm(a, b, out=out)
            with pytest.raises(RuntimeError):  # (in-place: no promotion of the bfloat16 source)
                a.clone().index_copy_(0, lib.tensor([0]), b[:1].to(lib.bfloat16))
        results[lib.__name__] = (dtype_name(x), x[0, 0].item(), dtype_name(out), out[0, 0].item())
    (x_dtype, x_value, out_dtype, out_value), expected = results["minilora"], results["torch"]
    assert (x_dtype, out_dtype) == (expected[0], expected[2]) == ("float32", "float32")
    # The values are float32 sums whose order is MKL's: on an AVX-512 EPYC its addmm_ accumulates the
    # three products into x (0.47619048), on earlier CPUs it added x last (0.4761905, minilora's):
    # one float32 ulp at 0.48 (2^-25 per rounding, three roundings) is what either order permits.
    np.testing.assert_allclose([x_value, out_value], [expected[1], expected[3]], rtol=0, atol=3 * 2.0 ** -25)


@pytest.mark.parametrize("op", ["cat", "stack", "index_copy"])
def test_promoting_the_other_16_bit_dtype_is_refused_as_torch(op):
    """torch's ``prioritize``: float32 wins over the region's dtype, float64 is left alone, and a
    16-bit dtype that is not the region's is an error (without autocast cat would give float16)."""
    for lib in (torch, ml):
        half = lib.ones(2, dtype=lib.float16)
        call = {"cat": lambda: lib.cat([half, half]), "stack": lambda: lib.stack([half, lib.ones(2)]),
                "index_copy": lambda: lib.index_copy(half, 0, lib.tensor([0]), half[:1])}[op]
        with lib.autocast("cpu", dtype=lib.bfloat16), pytest.raises(RuntimeError, match="prioritize"):
            call()
        assert dtype_name(call()) == ("float32" if op == "stack" else "float16")  # (outside: no error)


# ---- the region: state, nesting, decorator, deprecated spellings, refusals ---------------------------
def state(lib):
    return (lib.is_autocast_enabled("cpu"), dtype_name(lib.get_autocast_dtype("cpu")), lib.is_autocast_enabled(),
            lib.is_autocast_cache_enabled())


def test_state_nesting_and_enabled_false_as_torch():
    seen = {}
    for lib in (torch, ml):
        a = lib.ones(2, 2)
        log = [state(lib)]
        with lib.autocast(device_type="cpu"):
            log += [state(lib), dtype_name(lib.mm(a, a))]
            with lib.autocast("cpu", enabled=False):
                log += [state(lib), dtype_name(lib.mm(a, a))]
                with lib.amp.autocast("cpu", dtype=lib.float16, cache_enabled=False):
                    log += [state(lib), dtype_name(lib.mm(a, a))]
            log += [state(lib), dtype_name(lib.mm(a, a))]
        log += [state(lib), dtype_name(lib.mm(a, a))]
        seen[lib.__name__] = log
    assert seen["minilora"] == seen["torch"]


def test_decorator_and_deprecated_spellings_warn_as_torch():
    for lib in (torch, ml):
        @lib.autocast("cpu")
        def forward(a):
            return lib.mm(a, a)

        assert dtype_name(forward(lib.ones(2, 2))) == "bfloat16"
        assert forward.__name__ == "forward" and not lib.is_autocast_enabled("cpu")
        with pytest.warns(FutureWarning, match=r"torch.cpu.amp.autocast\(args...\)` is deprecated"):
            region = lib.cpu.amp.autocast()
        with region:
            assert dtype_name(lib.mm(lib.ones(2, 2), lib.ones(2, 2))) == "bfloat16"
        with pytest.raises(TypeError, match="requires a callable, but got int"):
            lib.autocast("cpu")(3)


def test_older_per_device_spellings_as_torch():
    for lib in (torch, ml):
        with lib.autocast("cpu", dtype=lib.float16):
            with pytest.warns(DeprecationWarning, match=r"is_autocast_cpu_enabled\(\) is deprecated. Please use "
                                                        r"torch.is_autocast_enabled\('cpu'\) instead"):
                assert lib.is_autocast_cpu_enabled()
            with pytest.warns(DeprecationWarning, match=r"Please use torch.get_autocast_dtype\('cpu'\)"):
                assert dtype_name(lib.get_autocast_cpu_dtype()) == "float16"
            with pytest.warns(DeprecationWarning, match=r"Please use torch.get_autocast_dtype\('cuda'\)"):
                assert dtype_name(lib.get_autocast_gpu_dtype()) == "float16"
            with pytest.warns(DeprecationWarning, match=r"Please use torch.set_autocast_dtype\('cpu', dtype\)"):
                lib.set_autocast_cpu_dtype(lib.bfloat16)
            with pytest.warns(DeprecationWarning, match=r"set_autocast_cpu_enabled\(enabled\) is deprecated"):
                lib.set_autocast_cpu_enabled(False)
            with pytest.warns(DeprecationWarning, match=r"Please use torch.set_autocast_dtype\('cuda', dtype\)"):
                lib.set_autocast_gpu_dtype(lib.float16)
            assert not lib.is_autocast_enabled("cpu") and dtype_name(lib.get_autocast_dtype("cpu")) == "bfloat16"
        assert not lib.is_autocast_enabled("cpu") and dtype_name(lib.get_autocast_dtype("cpu")) == "bfloat16"


def test_refusals_as_torch():
    for lib in (torch, ml):
        with pytest.warns(UserWarning, match="CPU Autocast only supports dtypes of torch.bfloat16, torch.float16"):
            region = lib.autocast("cpu", dtype=lib.float32)
        with region:
            assert not lib.is_autocast_enabled("cpu")
        with pytest.raises(ValueError, match="Expected `device_type` of type `str`"):
            lib.autocast(lib.device("cpu"))
        with pytest.raises(RuntimeError, match="Expected one of cpu, cuda"):
            lib.autocast("tpu")
        with pytest.raises(TypeError):
            lib.autocast()


def test_cuda_without_a_gpu_warns_and_disables_as_torch():
    if ml.cuda.is_available():
        pytest.skip("a GPU answers: minilora refuses autocast('cuda') there (torch's CUDA tables)")
    for lib in (torch, ml):
        with pytest.warns(UserWarning, match="CUDA is not available or torch_xla is imported. Disabling autocast."):
            region = lib.autocast("cuda")
        with region:
            assert not lib.is_autocast_enabled("cuda")
        with pytest.warns(FutureWarning, match="torch.cuda.amp.autocast"), pytest.warns(UserWarning):
            lib.cuda.amp.autocast()
        with pytest.warns(UserWarning, match="GradScaler is enabled, but CUDA is not available.  Disabling."):
            assert not lib.amp.GradScaler("cuda").is_enabled()


def test_emu_autocast_runs_torchs_cuda_tables():
    """(No longer refused: tests/test_amp_cuda_r6.py checks the CUDA tables op by op.)"""
    with ml.autocast("emu") as region:
        assert region._enabled and ml.is_autocast_enabled("emu") and ml.get_autocast_dtype("emu") == ml.float16


# ---- the weight cache and gradients -------------------------------------------------------------------
def linear_pair(inp=4, out=3, bias=True):
    theirs = torch.nn.Linear(inp, out, bias=bias)
    ours = ml.nn.Linear(inp, out, bias=bias)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    return theirs, ours


@pytest.mark.parametrize("cache_enabled", [True, False, None])
def test_weight_cache_is_observable_as_torchs(cache_enabled):
    """Within one region a parameter is cast once: an in-place change is not seen until the region
    ends (torch's cache); with cache_enabled=False every op casts afresh."""
    results = {}
    for lib, layer in zip((torch, ml), linear_pair()):
        x = lib.ones(2, 4)
        with lib.autocast("cpu", cache_enabled=cache_enabled):
            before = layer(x)
            with lib.no_grad():
                layer.weight.add_(1)
            inside = layer(x)
        with lib.autocast("cpu"):
            after = layer(x)
        results[lib.__name__] = (bool((before == inside).all()), bool((before == after).all()))
    assert results["minilora"] == results["torch"]


def test_gradients_of_an_mlp_come_back_in_float32_as_torch():
    t1, m1 = linear_pair(6, 8)
    t2, m2 = linear_pair(8, 3)
    tx, mx = pair(5, 6)
    tx.requires_grad_(), mx.requires_grad_()
    target = [0, 2, 1, 1, 0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = TF.relu(t1(tx))
        logits = t2(hidden)
        loss = TF.cross_entropy(logits, torch.tensor(target))
    with ml.autocast("cpu", dtype=ml.bfloat16):
        m_hidden = MF.relu(m1(mx))
        m_logits = m2(m_hidden)
        m_loss = MF.cross_entropy(m_logits, ml.tensor(target))
    assert (dtype_name(m_hidden), dtype_name(m_logits), dtype_name(m_loss)) == ("bfloat16", "bfloat16", "float32")
    loss.backward()
    m_loss.backward()
    np.testing.assert_allclose(m_loss.item(), loss.item(), rtol=1e-6)
    for theirs, ours in ((t1.weight, m1.weight), (t1.bias, m1.bias), (t2.weight, m2.weight), (tx, mx)):
        assert ours.grad.dtype == ml.float32 and ours.dtype == ml.float32
        np.testing.assert_allclose(numpy_of(ours.grad), numpy_of(theirs.grad), rtol=2 ** -7, atol=2 ** -8)


# ---- a tiny Llama against transformers', and a LoRA model against PEFT's ------------------------------
@pytest.fixture(scope="module")
def llama_pair():
    pytest.importorskip("transformers")
    from test_peft_conformance_r3 import pair as llama_pair_of
    return llama_pair_of()


def test_llama_forward_under_autocast_as_transformers(llama_pair):
    """float32 parameters, a bfloat16 region: the projections and the head in bfloat16, the residual
    stream, the norms and transformers' loss in float32, as transformers' LlamaForCausalLM. Values to
    bfloat16's tolerance: torch's CPU attention kernel rounds bfloat16 in other places than minilora's
    (one unit in the last place in about a sixth of the outputs, without autocast too)."""
    from test_peft_conformance_r3 import IDS
    reference, model = llama_pair
    ids = torch.tensor(IDS)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        expected = reference(ids, labels=ids, output_hidden_states=True)
    with ml.autocast(device_type="cpu", dtype=ml.bfloat16):
        got = model(ml.tensor(IDS), labels=ml.tensor(IDS), output_hidden_states=True)
    assert [dtype_name(h) for h in got.hidden_states] == [dtype_name(h) for h in expected.hidden_states]
    assert (dtype_name(got.logits), dtype_name(got.loss)) == ("bfloat16", "float32")
    assert dtype_name(expected.logits) == "bfloat16"
    np.testing.assert_allclose(numpy_of(got.logits), numpy_of(expected.logits), atol=0.1)
    np.testing.assert_allclose(got.loss.item(), expected.loss.item(), rtol=2e-3)
    full = model(ml.tensor(IDS)).logits  # (outside the region: float32 again)
    assert full.dtype == ml.float32 and not np.array_equal(numpy_of(full), numpy_of(got.logits))
    got.loss.backward()
    assert all(p.grad.dtype == ml.float32 for p in model.parameters() if p.grad is not None)
    model.zero_grad()


def test_lora_layer_under_autocast_is_pefts_bit_for_bit(llama_pair):
    peft = pytest.importorskip("peft")
    from minilora.lora import LoraConfig, get_peft_model
    from test_peft_conformance_r3 import as_numpy, pair as llama_pair_of
    reference, model = llama_pair_of()
    config = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**config))
    ours = get_peft_model(model, LoraConfig(**config))
    ours.load_state_dict({k: as_numpy(v) for k, v in theirs.state_dict().items()}, strict=False)
    layer_t = theirs.base_model.model.model.layers[0].self_attn.q_proj
    layer_m = ours.base_model.model.model.layers[0].self_attn.q_proj
    tx, mx = pair(3, 16)
    with torch.autocast("cpu"):
        expected = layer_t(tx)
    with ml.autocast("cpu"):
        got = layer_m(mx)
    assert dtype_name(got) == dtype_name(expected) == "bfloat16"
    np.testing.assert_array_equal(numpy_of(got), numpy_of(expected))
    got.float().sum().backward()
    expected.float().sum().backward()
    for name in ("lora_A", "lora_B"):
        g_t, g_m = getattr(layer_t, name)["default"].weight.grad, getattr(layer_m, name)["default"].weight.grad
        assert g_m.dtype == ml.float32
        np.testing.assert_allclose(numpy_of(g_m), numpy_of(g_t), rtol=2 ** -7, atol=1e-6)


# ---- GradScaler -----------------------------------------------------------------------------------------
def scaler_run(lib, layer, steps, inf_at, **options):
    """The tutorial loop: scale, backward, unscale_, clip, step, update; an inf injected into the
    gradient at the steps in ``inf_at``. Returns the scales, growth trackers and step results."""
    optimizer = lib.optim.SGD(layer.parameters(), lr=0.1)
    scaler = lib.amp.GradScaler("cpu", **options)
    x = lib.ones(2, 4)
    log = []
    for step in range(steps):
        optimizer.zero_grad()
        with lib.autocast("cpu"):
            loss = layer(x).float().pow(2).mean()
        scaler.scale(loss).backward()
        if step in inf_at:
            with lib.no_grad():
                layer.weight.grad[0, 0] = float("inf")
        scaler.unscale_(optimizer)
        lib.nn.utils.clip_grad_norm_(layer.parameters(), 1.0)
        before = layer.weight.detach().clone()
        scaler.step(optimizer)
        moved = not bool((layer.weight == before).all())
        scaler.update()
        log.append((scaler.get_scale(), scaler._get_growth_tracker(), moved))
    return log, scaler.state_dict()


def test_grad_scaler_scales_skips_and_grows_as_torch():
    theirs, ours = linear_pair()
    options = dict(init_scale=2.0 ** 10, growth_factor=4.0, backoff_factor=0.25, growth_interval=2)
    expected = scaler_run(torch, theirs, 9, {0, 3, 4, 8}, **options)
    got = scaler_run(ml, ours, 9, {0, 3, 4, 8}, **options)
    assert got == expected
    assert [moved for *_, moved in got[0]] == [False, True, True, False, False, True, True, True, False]
    np.testing.assert_allclose(numpy_of(ours.weight), numpy_of(theirs.weight), rtol=2 ** -7, atol=1e-6)


def test_grad_scaler_refuses_misuse_as_torch():
    for lib, layer in zip((torch, ml), linear_pair()):
        optimizer = lib.optim.SGD(layer.parameters(), lr=0.1)
        scaler = lib.amp.GradScaler("cpu")
        with pytest.raises(AssertionError, match="Attempted unscale_ but _scale is None"):
            scaler.unscale_(optimizer)
        assert scaler.get_scale() == 65536.0
        scaler.scale(layer(lib.ones(1, 4)).sum()).backward()
        scaler.unscale_(optimizer)
        with pytest.raises(RuntimeError, match=r"unscale_\(\) has already been called on this optimizer"):
            scaler.unscale_(optimizer)
        scaler.step(optimizer)
        with pytest.raises(RuntimeError, match=r"unscale_\(\) is being called after step\(\)"):
            scaler.unscale_(optimizer)
        with pytest.raises(RuntimeError, match=r"step\(\) has already been called since the last update\(\)"):
            scaler.step(optimizer)
        with pytest.raises(RuntimeError, match="Closure use is not currently supported"):
            scaler.step(optimizer, closure=lambda: None)
        scaler.update()
        with pytest.raises(AssertionError, match="The growth factor must be > 1.0"):
            lib.amp.GradScaler("cpu", growth_factor=1.0)
        half = lib.ones(2, dtype=lib.float16, requires_grad=True)
        (half * 2).sum().backward()
        with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients."):
            scaler.unscale_(lib.optim.SGD([half], lr=0.1))


def test_grad_scaler_per_optimizer_state_and_state_dict_as_torch():
    results = {}
    for lib, (first, second) in ((torch, (torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))),
                                 (ml, (ml.nn.Linear(4, 3), ml.nn.Linear(3, 2)))):
        opt1, opt2 = lib.optim.SGD(first.parameters(), lr=0.1), lib.optim.SGD(second.parameters(), lr=0.1)
        scaler = lib.amp.GradScaler("cpu", init_scale=8.0, growth_interval=1)
        scaler.scale([second(first(lib.ones(1, 4))).sum()])[0].backward()
        with lib.no_grad():
            second.bias.grad[0] = float("nan")  # only opt2 sees it: opt1 steps, opt2 skips, the scale backs off
        w1, w2 = first.weight.detach().clone(), second.weight.detach().clone()
        scaler.step(opt1)
        scaler.step(opt2)
        scaler.update()
        state = scaler.state_dict()
        fresh = lib.amp.GradScaler("cpu")
        fresh.load_state_dict(state)
        results[lib.__name__] = (bool((first.weight != w1).any()), bool((second.weight != w2).any()), state,
                                 fresh.get_scale(), fresh.get_growth_interval())
    assert results["minilora"] == results["torch"]
    assert results["torch"][:2] == (True, False)


def test_disabled_grad_scaler_passes_through_as_torch():
    for lib, layer in zip((torch, ml), linear_pair()):
        optimizer = lib.optim.SGD(layer.parameters(), lr=0.1)
        scaler = lib.amp.GradScaler("cpu", enabled=False)
        loss = layer(lib.ones(1, 4)).sum()
        assert scaler.scale(loss) is loss and not scaler.is_enabled()
        loss.backward()
        before = layer.weight.detach().clone()
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
        scaler.update()
        assert bool((layer.weight != before).any())
        assert (scaler.get_scale(), scaler.state_dict()) == (1.0, {})
        scaler.load_state_dict({})  # (a disabled scaler ignores it)
        with pytest.raises(RuntimeError, match="The source state dict is empty"):
            lib.amp.GradScaler("cpu").load_state_dict({})



# ---- custom autograd Functions under autocast ---------------------------------------------------------
def products_of(lib):
    """The torch docs' example: an mm Function whose forward casts its inputs to float32 (and runs
    without autocast), and one that runs as called, its backward in the forward's autocast state."""
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a.mm(b)

    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad.mm(b.t()), a.t().mm(grad)

    amp = lib.amp
    in_float32 = type("InFloat32", (lib.autograd.Function,), {
        "forward": staticmethod(amp.custom_fwd(device_type="cpu", cast_inputs=lib.float32)(forward)),
        "backward": staticmethod(amp.custom_bwd(device_type="cpu")(backward))})
    as_called = type("AsCalled", (lib.autograd.Function,), {
        "forward": staticmethod(amp.custom_fwd(forward, device_type="cpu")),
        "backward": staticmethod(amp.custom_bwd(backward, device_type="cpu"))})
    return in_float32, as_called


def test_custom_fwd_and_custom_bwd_as_torch():
    results = {}
    for lib in (torch, ml):
        in_float32, as_called = products_of(lib)
        a = lib.ones(2, 3, requires_grad=True)
        b = (lib.ones(3, 2) / 3).requires_grad_()
        with lib.autocast("cpu"):
            y = in_float32.apply(a.to(lib.bfloat16), b)
            z = as_called.apply(a, b)
        (y.sum() + z.float().sum()).backward()
        results[lib.__name__] = (dtype_name(y), dtype_name(z), dtype_name(a.grad), a.grad[0, 0].item(),
                                 b.grad[0, 0].item())
        with pytest.raises(ValueError, match="Expected `device_type` of type `str`"):
            lib.amp.custom_fwd(device_type=lib.device("cpu"))
    assert results["minilora"] == results["torch"]


def test_grad_scaler_on_the_cuda_stand_in(monkeypatch):
    """With a GPU (here CuPy's stand-in) GradScaler("cuda") is enabled and unscales device gradients
    (autocast("cuda") there: tests/test_amp_cuda_r6.py)."""
    import fake_cupy
    fake_cupy.install(monkeypatch)
    monkeypatch.setattr(ml.device("cuda"), "uses_kernels", False)  # the stand-in launches no kernels
    layer = ml.nn.Linear(4, 3, device="cuda")
    optimizer = ml.optim.SGD(layer.parameters(), lr=0.1)
    scaler = ml.amp.GradScaler("cuda", init_scale=8.0, growth_interval=1)
    scales = []
    for step in range(3):
        optimizer.zero_grad()
        scaler.scale(layer(ml.ones(2, 4, device="cuda")).pow(2).mean()).backward()
        if step == 1:
            with ml.no_grad():
                layer.weight.grad[0, 0] = float("inf")
        scaler.unscale_(optimizer)
        ml.nn.utils.clip_grad_norm_(layer.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        scales.append(scaler.get_scale())
    assert scales == [16.0, 8.0, 16.0] and layer.weight.device.type == "cuda"


@pytest.mark.parametrize("options", [dict(num_layers=2), dict(bidirectional=True), dict(proj_size=2)],
                         ids=["two-layers", "bidirectional", "proj_size"])
def test_lstm_under_autocast_as_torch(options):
    """torch's CPU nn.LSTM is one oneDNN kernel on autocast's list (``mkldnn_rnn_layer``): input,
    state, gates and outputs in bfloat16. With ``proj_size`` torch composes it from its ops instead."""
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(4, 3, batch_first=True, **options)
    ours = ml.nn.LSTM(4, 3, batch_first=True, **options)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    tx, mx = pair(2, 5, 4)
    with torch.autocast("cpu"):
        expected, (expected_h, expected_c) = theirs(tx)
    with ml.autocast("cpu"):
        got, (got_h, got_c) = ours(mx)
    assert [dtype_name(t) for t in (got, got_h, got_c)] == [dtype_name(t) for t in (expected, expected_h, expected_c)]
    for a, b in ((got, expected), (got_h, expected_h), (got_c, expected_c)):  # (oneDNN rounds its gates
        np.testing.assert_allclose(numpy_of(a), numpy_of(b), rtol=2 ** -6, atol=2 ** -7)  # elsewhere)


def test_checkpointed_segment_recomputes_in_its_forwards_region_as_torch():
    """torch's checkpoint recomputes a segment in backward inside the autocast region its forward ran
    in, so the gradients equal the uncheckpointed ones bit for bit (minilora's recomputed in float32)."""
    from torch.utils.checkpoint import checkpoint as torch_checkpoint
    first, second = linear_pair(4, 6), linear_pair(6, 2)
    tx, mx = pair(3, 4)
    for lib, layers, x, checkpoint in ((torch, [m[0] for m in (first, second)], tx, torch_checkpoint),
                                       (ml, [m[1] for m in (first, second)], mx, ml.nn.checkpoint)):
        grads = []
        for checkpointed in (False, True):
            block = lambda h: layers[1](layers[0](h).relu())  # noqa: E731
            with lib.autocast("cpu"):
                out = checkpoint(block, x.requires_grad_(), use_reentrant=False) if checkpointed else block(x)
            out.float().pow(2).sum().backward()
            grads.append([numpy_of(p.grad).copy() for layer in layers for p in layer.parameters()])
            for layer in layers:
                layer.zero_grad()
        assert dtype_name(out) == "bfloat16"
        for plain, recomputed in zip(*grads):
            np.testing.assert_array_equal(recomputed, plain)
