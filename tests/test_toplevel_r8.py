"""torch's top-level names that LLM training scripts call (nanoGPT's train.py, Hugging Face's examples),
against torch 2.13: torch.backends flags, set_float32_matmul_precision, torch.compile's OptimizedModule,
the deterministic switches, torch.dtype/typename/jit, the special functions, and small siblings."""
import warnings

import numpy as np
import pytest

import minilora as ml

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def restore_switches():
    """Each test leaves torch's and minilora's process-wide switches as it found them."""
    saved = (torch.get_float32_matmul_precision(), ml.get_float32_matmul_precision(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32,
             ml.backends.cudnn.benchmark, ml.backends.cudnn.deterministic, ml.backends.cudnn.allow_tf32,
             torch.get_deterministic_debug_mode(), ml.get_deterministic_debug_mode())
    yield
    torch.set_float32_matmul_precision(saved[0])
    ml.set_float32_matmul_precision(saved[1])
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32) = saved[2:5]
    ml.backends.cudnn.benchmark, ml.backends.cudnn.deterministic, ml.backends.cudnn.allow_tf32 = saved[5:8]
    torch.set_deterministic_debug_mode(saved[8])
    ml.set_deterministic_debug_mode(saved[9])


def both(fn):
    """fn(lib) for torch and minilora: the result, or the type of the error raised."""
    out = []
    for lib in (torch, ml):
        try:
            out.append(fn(lib))
        except Exception as error:  # noqa: BLE001  (the error's type is what is compared)
            out.append(type(error))
    return out


# --- torch.backends ----------------------------------------------------------------------------------

def read_flags(lib):
    b = lib.backends
    return (b.cuda.matmul.allow_tf32, b.cuda.matmul.allow_fp16_reduced_precision_reduction,
            b.cuda.matmul.allow_bf16_reduced_precision_reduction, b.cudnn.allow_tf32, b.cudnn.benchmark,
            b.cudnn.deterministic, b.cudnn.enabled, b.mps.is_available(), b.mps.is_built(),
            b.cuda.flash_sdp_enabled(), b.cuda.mem_efficient_sdp_enabled(), b.cuda.math_sdp_enabled(),
            b.cuda.cudnn_sdp_enabled(), b.mkldnn.enabled, b.mkldnn.is_available(), b.cuda.is_built(),
            lib.get_float32_matmul_precision())


def test_backends_defaults_as_torch_cpu():
    assert read_flags(ml) == read_flags(torch)
    assert ml.backends.cudnn.is_available() is torch.backends.cudnn.is_available() is False


@pytest.mark.parametrize("script", [
    "b.cuda.matmul.allow_tf32 = True; b.cudnn.allow_tf32 = True",  # nanoGPT's train.py
    "b.cudnn.benchmark = True; b.cudnn.deterministic = False",
    "b.cudnn.deterministic = True; b.cudnn.benchmark = False",  # HF's enable_full_determinism
    "b.cuda.matmul.allow_tf32 = True; b.cuda.matmul.allow_tf32 = False",
    "b.cudnn.enabled = False",
    "b.cuda.enable_flash_sdp(False); b.cuda.enable_math_sdp(True)",
    "b.cuda.enable_mem_efficient_sdp(False)",
    "lib.set_float32_matmul_precision('high')",
    "lib.set_float32_matmul_precision('medium')",
    "lib.set_float32_matmul_precision('high'); lib.set_float32_matmul_precision('highest')",
])
def test_flags_set_then_read_back_as_torch(script):
    def run(lib):
        exec(script, {"lib": lib, "b": lib.backends})
        flags = read_flags(lib)
        lib.backends.cuda.enable_flash_sdp(True)
        lib.backends.cuda.enable_mem_efficient_sdp(True)
        lib.backends.cudnn.enabled = True
        return flags
    assert run(ml) == run(torch)


@pytest.mark.parametrize("setting", ["b.cudnn.benchmark = 1", "b.cudnn.deterministic = 'yes'",
                                     "b.cudnn.allow_tf32 = 1", "b.cudnn.enabled = None",
                                     "b.cuda.matmul.allow_tf32 = 1", "b.cuda.enable_flash_sdp(1)",
                                     "b.cuda.matmul.allow_fp16_reduced_precision_reduction = 'x'",
                                     "b.cuda.matmul.no_such_flag = True", "b.cuda.matmul.no_such_flag",
                                     "lib.set_float32_matmul_precision(3)"])
def test_a_flag_takes_a_bool_only(setting):
    got, want = both(lambda lib: exec(setting, {"lib": lib, "b": lib.backends}))
    assert got == want and isinstance(want, type)
    assert read_flags(ml) == read_flags(torch)


def test_an_unknown_precision_warns_and_changes_nothing():
    for lib in (torch, ml):
        with pytest.warns(UserWarning, match="low is not one of 'highest', 'high', or 'medium'"):
            lib.set_float32_matmul_precision("low")
        assert lib.get_float32_matmul_precision() == "highest"


def test_flag_context_managers_restore():
    for lib in (torch, ml):
        with lib.backends.cudnn.flags(enabled=False, benchmark=True):
            assert (lib.backends.cudnn.enabled, lib.backends.cudnn.benchmark) == (False, True)
        assert (lib.backends.cudnn.enabled, lib.backends.cudnn.benchmark) == (True, False)
        with pytest.warns(FutureWarning, match="sdp_kernel"):
            with lib.backends.cuda.sdp_kernel(enable_flash=False, enable_math=True):
                assert not lib.backends.cuda.flash_sdp_enabled() and lib.backends.cuda.math_sdp_enabled()
        assert lib.backends.cuda.flash_sdp_enabled()


def test_backends_import_as_modules():
    import minilora.backends.cudnn as cudnn
    assert cudnn is ml.backends.cudnn


# --- deterministic algorithms, threads -----------------------------------------------------------------

@pytest.mark.parametrize("call", ["lib.use_deterministic_algorithms(True)",
                                  "lib.use_deterministic_algorithms(True, warn_only=True)",
                                  "lib.use_deterministic_algorithms(mode=False)",
                                  "lib.use_deterministic_algorithms(1)",
                                  "lib.use_deterministic_algorithms(True, warn_only=1)",
                                  "lib.set_deterministic_debug_mode('warn')", "lib.set_deterministic_debug_mode(2)",
                                  "lib.set_deterministic_debug_mode('default')",
                                  "lib.set_deterministic_debug_mode('x')", "lib.set_deterministic_debug_mode(5)"])
def test_deterministic_switches(call):
    def run(lib):
        try:
            exec(call, {"lib": lib})
        except Exception as error:  # noqa: BLE001
            return type(error)
        return (lib.are_deterministic_algorithms_enabled(), lib.is_deterministic_algorithms_warn_only_enabled(),
                lib.get_deterministic_debug_mode())
    assert run(ml) == run(torch)


def test_get_num_threads_reads_set_num_threads():
    before = ml.get_num_threads()
    try:
        ml.set_num_threads(1)
        assert ml.get_num_threads() == 1 and isinstance(ml.get_num_threads(), int)
    finally:
        ml.set_num_threads(before)
    assert ml.get_num_threads() == before


# --- torch.compile -------------------------------------------------------------------------------------

def linear_pair():
    """A torch Linear(3, 2) and a minilora copy of it. Seeded in a forked RNG: weights drawn from whatever state the
    tests before left (unseeded) made the float32 comparison below pass or fail with the suite's order."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch_model = torch.nn.Linear(3, 2)
    model = ml.nn.Linear(3, 2)
    model.load_state_dict({k: ml.tensor(v.detach().numpy()) for k, v in torch_model.state_dict().items()})
    return torch_model, model


def test_compile_wraps_a_module_as_optimized_module():
    torch_model, model = linear_pair()
    compiled_t, compiled = torch.compile(torch_model, backend="eager"), ml.compile(model)  # (eager: fast)
    assert type(compiled).__name__ == type(compiled_t).__name__ == "OptimizedModule"
    assert compiled._orig_mod is model and compiled.weight is model.weight
    assert list(compiled.state_dict()) == list(compiled_t.state_dict()) == ["_orig_mod.weight", "_orig_mod.bias"]
    assert [n for n, _ in compiled.named_parameters()] == [n for n, _ in compiled_t.named_parameters()]
    assert repr(compiled) == repr(compiled_t)
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    # (the seeded weights matter: NumPy's BLAS and torch's MKL sum x W^T + b in other orders, and where terms of size ~1
    # cancel to ~0.03 the float32 results differ by up to 2.4e-7 -- over 2000 unseeded draws, one in ten failed rtol=1e-6)
    np.testing.assert_allclose(compiled(ml.tensor(x)).detach().numpy(),
                               compiled_t(torch.tensor(x)).detach().numpy(), rtol=1e-6)
    assert compiled.in_features == 3  # attribute reads reach the original
    compiled.eval()
    assert model.training is False and compiled.training is False
    compiled.note = "x"  # ... and writes
    assert model.note == "x"


def test_compiled_module_copies_and_pickles():
    import copy
    import pickle
    _, model = linear_pair()
    compiled = ml.compile(model)
    for clone in (copy.deepcopy(compiled), pickle.loads(pickle.dumps(compiled))):
        assert type(clone).__name__ == "OptimizedModule" and clone._orig_mod is not model
        assert list(clone.state_dict()) == ["_orig_mod.weight", "_orig_mod.bias"]
        assert ml.equal(clone(ml.ones(1, 3)), compiled(ml.ones(1, 3)))
    assert not hasattr(compiled, "no_such_attribute")


def test_compiled_checkpoint_loads_after_stripping_the_prefix_as_nanogpt_does():
    _, model = linear_pair()
    state = ml.compile(model).state_dict()
    fresh = ml.nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match="Missing key"):
        fresh.load_state_dict(state)
    fresh.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in state.items()})
    assert ml.equal(fresh.weight, model.weight)


def test_compiled_module_trains_the_original_parameters():
    _, model = linear_pair()
    compiled = ml.compile(model, mode="max-autotune", fullgraph=True, dynamic=False)
    optimizer = ml.optim.SGD(compiled.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    compiled(ml.ones(2, 3)).sum().backward()
    optimizer.step()
    assert not ml.equal(model.weight, before)


def test_compile_a_function_and_as_decorator():
    def square(x):
        """doc"""
        return x * x
    for lib in (torch, ml):
        compiled = lib.compile(square)
        assert compiled.__name__ == "square" and compiled.__wrapped__ is square and compiled.__doc__ == "doc"
    compiled = ml.compile(square)
    assert float(compiled(ml.tensor(3.0))) == 9.0

    @ml.compile(mode="reduce-overhead")
    def double(x):
        return 2 * x

    @ml.compile
    def triple(x):
        return 3 * x
    assert float(double(ml.tensor(2.0))) == 4.0 and float(triple(ml.tensor(2.0))) == 6.0


@pytest.mark.parametrize("call", ["lib.compile(f, mode='fastest')", "lib.compile(f, mode='default', options={})",
                                  "lib.compile(3)", "lib.compile(f, backend='no_such_backend')"])
def test_compile_refuses_as_torch(call):
    want, got = both(lambda lib: exec(call, {"lib": lib, "f": lambda x: x}))
    assert isinstance(want, type) and issubclass(want, Exception)
    assert got is want or (want.__name__ == "InvalidBackend" and got is RuntimeError)


def test_module_compile_in_place_leaves_the_module_working():
    _, model = linear_pair()
    assert model.compile() is None
    assert model(ml.ones(1, 3)).shape == (1, 2)
    with pytest.raises(RuntimeError, match="Unrecognized mode"):
        model.compile(mode="nope")


def test_jit_and_compiler_names():
    def f(x):
        return x + 1
    assert ml.jit.script(f) is f and ml.jit.trace(f, (ml.ones(1),)) is f
    assert ml.jit.is_scripting() is torch.jit.is_scripting() is False
    assert ml.jit.is_tracing() is torch.jit.is_tracing() is False
    assert ml.jit.ignore(f) is f and ml.jit.unused(f) is f and torch.jit.unused(f) is f
    assert ml.compiler.is_compiling() is torch.compiler.is_compiling() is False
    assert ml._dynamo.is_compiling() is False and ml.compiler.reset() is None
    assert ml.compiler.disable(f) is f
    import minilora._dynamo as dynamo  # (transformers' is_torchdynamo_compiling imports it so)
    import minilora.jit as jit
    assert dynamo.is_compiling() is False and jit is ml.jit


def test_nanogpt_train_script_lines():
    """nanoGPT's train.py, the lines that touch torch's switches and torch.compile, then its resume."""
    ml.backends.cuda.matmul.allow_tf32 = True
    ml.backends.cudnn.allow_tf32 = True
    _, model = linear_pair()
    unoptimized_model = model
    model = ml.compile(model)
    checkpoint = {"model": model.state_dict()}
    state_dict = checkpoint["model"]
    unwanted_prefix = "_orig_mod."
    for k, v in list(state_dict.items()):
        if k.startswith(unwanted_prefix):
            state_dict[k[len(unwanted_prefix):]] = state_dict.pop(k)
    fresh = ml.nn.Linear(3, 2)
    fresh.load_state_dict(state_dict)
    assert ml.equal(fresh(ml.ones(1, 3)), unoptimized_model(ml.ones(1, 3)))
    assert ml.get_float32_matmul_precision() == "high"


# --- torch.dtype, torch.typename -------------------------------------------------------------------------

def test_dtype_is_the_class_of_every_dtype():
    for name in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8", "bool", "complex64"):
        assert isinstance(getattr(ml, name), ml.dtype) and isinstance(getattr(torch, name), torch.dtype)
    assert not isinstance("float32", ml.dtype) and not isinstance(np.float32, ml.dtype)
    assert isinstance(ml.ones(2).dtype, ml.dtype)
    want, got = both(lambda lib: lib.dtype())
    assert got is want is TypeError


@pytest.mark.parametrize("make", ["lib.ones(2)", "lib.ones(2, dtype=lib.int64)", "lib.ones(2, dtype=lib.bfloat16)",
                                  "lib.ones(2, dtype=lib.float16)", "lib.ones(2, dtype=lib.bool)",
                                  "lib.ones(2, dtype=lib.uint8)", "lib.ones(2, dtype=lib.float64)",
                                  "lib.nn.Parameter(lib.ones(1))", "3", "None", "[1]", "lib.float32", "'x'"])
def test_typename(make):
    want, got = both(lambda lib: lib.typename(eval(make, {"lib": lib})))
    assert got == want


def test_typename_of_a_module_names_its_class():
    assert ml.typename(ml.nn.Linear(1, 1)) == "minilora.nn.layers.Linear"


# --- special functions ---------------------------------------------------------------------------------

RNG = np.random.default_rng(128)
WIDE = np.concatenate([RNG.uniform(-8, 8, 60), [0.25, 1.0, 2.0, 3.5, 10.0, 25.0]])
POSITIVE = np.concatenate([RNG.uniform(0.05, 12, 60), [0.5, 1.0, 2.0, 30.0, 100.0]])
UNIT = np.concatenate([RNG.uniform(-0.999, 0.999, 60), [0.0, 0.5, -0.9999, 0.999999]])
PROBABILITY = np.concatenate([RNG.uniform(0.001, 0.999, 60), [1e-10, 1e-30, 0.5, 0.999999]])
# name -> (call as the user writes it, inputs); nothing on a pole or a root
SPECIAL = {
    "erfc": ("lib.erfc(x)", WIDE), "erfc_method": ("x.erfc()", WIDE),
    "erfinv": ("lib.erfinv(x)", UNIT), "erfinv_method": ("x.erfinv()", UNIT),
    "lgamma": ("lib.lgamma(x)", np.concatenate([POSITIVE, [-0.5, -1.5, -2.7]])),
    "lgamma_method": ("x.lgamma()", POSITIVE),
    "digamma": ("lib.digamma(x)", np.concatenate([POSITIVE, [-0.5, -1.3, -7.25]])),
    "digamma_method": ("x.digamma()", POSITIVE),
    "polygamma1": ("lib.polygamma(1, x)", np.concatenate([POSITIVE, [-0.5, -2.25]])),
    "polygamma2": ("lib.polygamma(2, x)", POSITIVE), "polygamma3_method": ("x.polygamma(3)", POSITIVE),
    "polygamma0": ("lib.polygamma(0, x)", POSITIVE),
    "mvlgamma": ("lib.mvlgamma(x + 2, p=3)", POSITIVE), "mvlgamma_method": ("(x + 1).mvlgamma(2)", POSITIVE),
    "i0": ("lib.i0(x)", WIDE), "i0_method": ("x.i0()", WIDE),
    "special.erf": ("lib.special.erf(x)", WIDE), "special.erfc": ("lib.special.erfc(x)", WIDE),
    "special.erfinv": ("lib.special.erfinv(x)", UNIT), "special.expit": ("lib.special.expit(x)", WIDE),
    "special.logit": ("lib.special.logit(x, eps=1e-6)", PROBABILITY),
    "special.gammaln": ("lib.special.gammaln(x)", POSITIVE), "special.digamma": ("lib.special.digamma(x)", POSITIVE),
    "special.psi": ("lib.special.psi(x)", POSITIVE), "special.polygamma": ("lib.special.polygamma(2, x)", POSITIVE),
    "special.multigammaln": ("lib.special.multigammaln(x + 1, 2)", POSITIVE),
    "special.xlogy": ("lib.special.xlogy(x, x + 1)", POSITIVE),
    "special.xlog1py": ("lib.special.xlog1py(x, x)", POSITIVE),
    "special.log_softmax": ("lib.special.log_softmax(x.reshape(6, -1), 1)", WIDE),
    "special.softmax": ("lib.special.softmax(x.reshape(6, -1), dim=0)", WIDE),
    "special.i0": ("lib.special.i0(x)", WIDE), "special.i1": ("lib.special.i1(x)", WIDE),
    "special.i0e": ("lib.special.i0e(x * 20)", WIDE), "special.i1e": ("lib.special.i1e(x * 20)", WIDE),
    "special.zeta": ("lib.special.zeta(3.5, x)", POSITIVE),
    "special.zeta_tensors": ("lib.special.zeta(x.detach() + 1.25, x.flip(0) + 0.5)", POSITIVE),
    "special.sinc": ("lib.special.sinc(x)", WIDE), "special.entr": ("lib.special.entr(x)", POSITIVE),
    "special.ndtr": ("lib.special.ndtr(x)", WIDE), "special.ndtri": ("lib.special.ndtri(x)", PROBABILITY),
    "special.log_ndtr": ("lib.special.log_ndtr(x)", np.concatenate([WIDE, [-30.0, -45.0, 12.0]])),
    "special.logsumexp": ("lib.special.logsumexp(x.reshape(2, -1), 1)", WIDE),
    "special.logsumexp_keepdim": ("lib.special.logsumexp(x.reshape(2, -1), dim=0, keepdim=True)", WIDE),
    "special.round": ("lib.special.round(x)", WIDE), "special.expm1": ("lib.special.expm1(x)", WIDE),
    "special.exp2": ("lib.special.exp2(x)", WIDE), "special.log1p": ("lib.special.log1p(x)", POSITIVE),
}
# float32 where torch's own kernel is a few ulps off: digamma's recurrence rounds at each step (both
# compute it so; near its root 1.46 the difference is absolute), torch's float32 i1 and log_ndtr series
FLOAT32_TOLERANCE = {"digamma": (2.5e-7, 5e-7), "digamma_method": (2.5e-7, 5e-7), "polygamma0": (2.5e-7, 5e-7),
                     "special.digamma": (2.5e-7, 5e-7), "special.psi": (2.5e-7, 5e-7),
                     "special.i1": (2e-6, 0), "special.log_ndtr": (1e-5, 0),  # (torch: float32 erfc in the upper tail)
                     "special.expit": (1e-5, 5e-8),  # (minilora's float32 sigmoid is fastmath's)
                     "special.ndtr": (2.5e-7, 1e-7)}  # (1 + erf: torch's tail cancels too)
DIFFERENTIABLE = [name for name in SPECIAL if name != "special.round"]


def run_special(lib, name, dtype, requires_grad=False):
    call, values = SPECIAL[name]
    x = lib.tensor(values, dtype=getattr(lib, dtype), requires_grad=requires_grad)
    return x, eval(call, {"lib": lib, "x": x})


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(SPECIAL))
def test_special_values_as_torch(name, dtype):
    _, want = run_special(torch, name, dtype)
    _, got = run_special(ml, name, dtype)
    assert got.dtype == getattr(ml, dtype) and got.shape == tuple(want.shape)
    # float32: an ulp or two of torch's own float32 kernels; float64: to rounding
    rtol, atol = (2.5e-7, 1e-37) if dtype == "float32" else (1e-12, 1e-300)
    if dtype == "float32" and name in FLOAT32_TOLERANCE:
        rtol, atol = FLOAT32_TOLERANCE[name]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_special_gradients_as_torch(name):
    outputs = {}
    for lib in (torch, ml):
        x, y = run_special(lib, name, "float64", requires_grad=True)
        weights = lib.tensor(np.linspace(0.5, 1.5, y.numel()).reshape(tuple(y.shape)), dtype=lib.float64)
        (y * weights).sum().backward()
        outputs[lib] = x.grad.numpy()
    np.testing.assert_allclose(outputs[ml], outputs[torch], rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("call, values", [("lib.erfc(x)", [0.3, -1.2]), ("lib.erfinv(x)", [0.3, -0.7]),
                                          ("lib.lgamma(x)", [0.3, 2.2]), ("lib.digamma(x)", [0.3, 2.2]),
                                          ("lib.polygamma(2, x)", [0.3, 2.2]), ("lib.i0(x)", [0.3, -2.2]),
                                          ("lib.special.ndtri(x)", [0.3, 0.01]),
                                          ("lib.special.log_ndtr(x)", [0.3, -25.0]),
                                          ("lib.special.i1(x)", [0.3, -2.2, 0.0]),
                                          ("lib.mvlgamma(x, 2)", [1.3, 2.2])])
def test_special_gradcheck(call, values):
    x = ml.tensor(values, dtype=ml.float64, requires_grad=True)
    assert ml.autograd.gradcheck(lambda t: eval(call, {"lib": ml, "x": t}), (x,))


@pytest.mark.parametrize("call", ["lib.erfinv(lib.tensor([1.0, -1.0, 1.5, -2.0, 0.0]))",
                                  "lib.lgamma(lib.tensor([0.0, -1.0, -2.0, float('inf'), float('-inf')]))",
                                  "lib.digamma(lib.tensor([0.0, -0.0, -1.0, -3.0, float('inf')]))",
                                  "lib.polygamma(1, lib.tensor([0.0, 1e-3, 50.0]))",
                                  "lib.special.ndtri(lib.tensor([0.0, 1.0, -0.5, 1.5]))",
                                  "lib.special.entr(lib.tensor([0.0, -1.0, 1.0, float('nan')]))",
                                  "lib.special.log_ndtr(lib.tensor([-1e3, 1e3, float('-inf')]))",
                                  "lib.erfc(lib.tensor([10.0, -10.0, 30.0]))",
                                  "lib.i0(lib.tensor([0.0, 80.0, -80.0]))",
                                  "lib.erfc(lib.tensor([1, 2]))", "lib.lgamma(lib.tensor([True, False]))",
                                  "lib.special.i1(lib.tensor([3]))",
                                  "lib.erfc(lib.tensor([0.5, 1.5], dtype=lib.float16))",
                                  "lib.digamma(lib.tensor([0.5, 1.5], dtype=lib.bfloat16))"])
def test_special_edges_and_dtypes(call):
    want, got = both(lambda lib: eval(call, {"lib": lib}))
    assert got.dtype.name == str(want.dtype).removeprefix("torch.")
    np.testing.assert_allclose(got.float().numpy(), want.float().numpy(), rtol=3e-7, equal_nan=True)


@pytest.mark.parametrize("call", ["lib.polygamma(-1, lib.ones(2))", "lib.polygamma(1.5, lib.ones(2))",
                                  "lib.mvlgamma(lib.ones(2), 0)",
                                  "lib.tensor([1, 2]).erfc_()", "lib.tensor([1, 2]).lgamma_()",
                                  "lib.special.ndtri(lib.ones(2, dtype=lib.float16))",
                                  "lib.special.log_ndtr(lib.ones(2, dtype=lib.bfloat16))",
                                  "lib.nextafter(lib.ones(2), 2.0)",
                                  "lib.special.zeta(lib.tensor([2.0], requires_grad=True), 1.0).sum().backward()"])
def test_special_refusals_as_torch(call):
    want, got = both(lambda lib: eval(call, {"lib": lib}))
    assert isinstance(want, type) and got is want


def test_xlog1py_at_its_edges_as_torch():
    """0 where input is 0 (also at other = -1); torch's gradients there (0 for input, nan/inf for other)."""
    results = []
    for lib in (torch, ml):
        x = lib.tensor([0.0, 0.0, 2.0, 1.5], requires_grad=True)
        y = lib.tensor([-1.0, 3.0, -1.0, 1e-9], requires_grad=True)
        out = lib.special.xlog1py(x, y)
        out.sum().backward()
        integers = lib.special.xlog1py(lib.tensor([1]), 2).dtype
        number_first = lib.special.xlog1py(2, lib.tensor([1.0])).tolist()
        results.append(str([t.tolist() for t in (out, x.grad, y.grad)] +
                           [number_first, str(integers).removeprefix("torch.")]))
    assert results[1] == results[0]


def test_special_in_place_and_out():
    for lib in (torch, ml):
        x = lib.tensor([0.25, 0.75])
        assert x.erfinv_() is x
        y = lib.tensor([0.5, 1.5])
        y.polygamma_(1)
        z = lib.tensor([2.5, 3.5])
        z.mvlgamma_(p=2)
        out = lib.empty(2)
        assert lib.lgamma(lib.tensor([0.5, 4.0]), out=out) is out
        special_out = lib.empty(2)
        lib.special.ndtr(lib.tensor([0.0, 1.0]), out=special_out)
        if lib is torch:
            want = [t.numpy() for t in (x, y, z, out, special_out)]
    for got, expected in zip((x, y, z, out, special_out), want):
        np.testing.assert_allclose(got.numpy(), expected, rtol=3e-7)


# --- small siblings: row_stack, the *_scatter ops, renorm, frexp, nextafter, gradient, empty_strided, range ----

def run_with_grads(lib, call, arrays):
    """``call`` on float64 leaves made from ``arrays``; (values, grads of sum(out * weights))."""
    leaves = [lib.tensor(a, dtype=lib.float64, requires_grad=True) for a in arrays]
    out = eval(call, {"lib": lib, "a": leaves[0], "b": leaves[-1]})
    outs = out if isinstance(out, tuple) else (out,)
    total = sum((o * lib.tensor(np.linspace(0.5, 2.0, o.numel()).reshape(tuple(o.shape)), dtype=lib.float64)).sum()
                for o in outs if o.requires_grad)
    total.backward()
    return [o.detach().numpy() for o in outs], [leaf.grad.numpy() if leaf.grad is not None else None for leaf in leaves]


@pytest.mark.parametrize("call, shapes", [
    ("lib.row_stack((a, b))", [(2, 3), (1, 3)]),
    ("lib.diagonal_scatter(a, b)", [(3, 3), (3,)]), ("lib.diagonal_scatter(a, b, 1)", [(3, 4), (3,)]),
    ("lib.diagonal_scatter(a, b, offset=-1, dim1=1, dim2=2)", [(2, 3, 3), (2, 2)]),
    ("a.diagonal_scatter(b, 0, 0, 1)", [(2, 3), (2,)]),
    ("lib.select_scatter(a, b, 0, 1)", [(3, 4), (4,)]), ("lib.select_scatter(a, b, dim=-1, index=-1)", [(3, 4), (3,)]),
    ("a.select_scatter(b, 1, 0)", [(2, 3, 4), (2, 4)]),
    ("lib.slice_scatter(a, b)", [(3, 4), (3, 4)]), ("lib.slice_scatter(a, b, start=1, end=3)", [(4, 2), (2, 2)]),
    ("lib.slice_scatter(a, b, dim=1, start=0, end=4, step=2)", [(3, 4), (3, 2)]),
    ("a.slice_scatter(b, 1, -2)", [(3, 4), (3, 2)]),
    ("lib.renorm(a, 2, 0, 1.0)", [(3, 4), (3, 4)]), ("lib.renorm(a, p=1, dim=1, maxnorm=2.5)", [(3, 4), (3, 4)]),
    ("a.renorm(3.0, -1, 100.0)", [(2, 3), (2, 3)]), ("lib.renorm(a, 2, 1, 0.5)", [(2, 3, 2), (2, 3, 2)]),
    ("lib.frexp(a * 100)", [(3, 4), (3, 4)]), ("a.frexp()", [(5,), (5,)]),
    ("lib.gradient(a)", [(5,), (5,)]), ("lib.gradient(a, spacing=2.0)", [(4, 5), (4, 5)]),
    ("lib.gradient(a, dim=1, edge_order=2)", [(3, 5), (3, 5)]),
    ("lib.gradient(a, spacing=[0.5, 2.0])", [(3, 4), (3, 4)]),
    ("lib.gradient(a, spacing=(lib.tensor([0.0, 1.0, 3.0, 4.5]),), dim=0)", [(4, 2), (4, 2)]),
    ("lib.gradient(a, spacing=(lib.tensor([0.0, 1.0, 3.0, 4.5, 7.0]),), dim=-1, edge_order=2)", [(2, 5), (2, 5)]),
])
def test_siblings_values_and_gradients_as_torch(call, shapes):
    rng = np.random.default_rng(len(call))
    arrays = [rng.standard_normal(shape) for shape in shapes]
    (want, want_grads), (got, got_grads) = (run_with_grads(lib, call, arrays) for lib in (torch, ml))
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12)
    for g, w in zip(got_grads, want_grads):
        assert (g is None) == (w is None)
        if w is not None:
            np.testing.assert_allclose(g, w, rtol=1e-10)


@pytest.mark.parametrize("call", [
    "lib.frexp(lib.tensor([8.0, 0.3, 0.0, -5.0, float('inf'), float('nan'), 1e-40]))",
    "lib.frexp(lib.tensor([3.0, -0.1], dtype=lib.float16))", "lib.frexp(lib.tensor(3.0))",
    "lib.frexp(lib.tensor([3.0, -0.1], dtype=lib.bfloat16))",
    "lib.nextafter(lib.tensor([1.0, 2.0, 0.0]), lib.tensor([2.0, 1.0, -1.0]))",
    "lib.nextafter(lib.tensor([1.0], dtype=lib.float64), lib.tensor([2.0], dtype=lib.float64))",
    "lib.tensor([1.0, -3.0]).nextafter(lib.tensor([0.0, 0.0]))",
    "lib.range(1, 4)", "lib.range(0, 1, 0.25)", "lib.range(1, 4, dtype=lib.int64)", "lib.range(4, 1, -1)",
    "lib.range(0, 0.95, 0.1)", "lib.range(-1.5, 2.5, 0.5, dtype=lib.float64)",
    "lib.empty_strided((2, 3), (1, 2)).stride()", "lib.empty_strided((2, 3), (3, 1), dtype=lib.float64).dtype",
    "lib.empty_strided((0, 3), (3, 1)).shape", "lib.empty_strided([4], [2]).stride()",
])
def test_siblings_exact_results(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        want, got = both(lambda lib: eval(call, {"lib": lib}))
    if isinstance(want, torch.dtype):
        assert got.name == str(want).removeprefix("torch.")
    elif isinstance(want, tuple) and not hasattr(want, "mantissa"):
        assert tuple(got) == tuple(want)
    elif hasattr(want, "mantissa") or hasattr(want, "dtype"):
        assert type(got).__name__ == type(want).__name__
        for g, w in (zip(got, want) if isinstance(want, tuple) else [(got, want)]):
            assert g.dtype.name == str(w.dtype).removeprefix("torch.") and tuple(g.shape) == tuple(w.shape)
            np.testing.assert_array_equal(g.float().numpy(), w.float().numpy())
    else:
        assert str(got).replace("minilora.", "torch.") == str(want)


@pytest.mark.parametrize("call", [
    "lib.diagonal_scatter(lib.zeros(3, 3), lib.ones(2))", "lib.select_scatter(lib.zeros(3, 3), lib.ones(2), 0, 0)",
    "lib.slice_scatter(lib.zeros(3, 3), lib.ones(3, 3), 0, 1)",
    "lib.select_scatter(lib.zeros(3, 3), lib.ones(3), 0, 5)",
    "lib.renorm(lib.ones(2, 2), -1, 0, 5)", "lib.renorm(lib.ones(2, 2), 2, 0, -5)", "lib.renorm(lib.ones(2), 2, 0, 5)",
    "lib.frexp(lib.tensor([1, 2]))", "lib.nextafter(lib.tensor([1, 2]), lib.tensor([2, 1]))",
    "lib.gradient(lib.tensor([1.0]))", "lib.gradient(lib.ones(3, 3), edge_order=3)",
    "lib.gradient(lib.ones(3, 3), spacing=[1.0, 2.0, 3.0])",
    "lib.empty_strided((2, 3), (1,))", "lib.empty_strided((2, 3), (-1, 2))", "lib.empty_strided((2, -3), (1, 2))",
    "lib.range(1, 4, 0)", "lib.range(4, 1)", "lib.range(5)",
])
def test_siblings_refuse_as_torch(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        want, got = both(lambda lib: eval(call, {"lib": lib}))
    assert isinstance(want, type) and issubclass(got, want)


def test_range_warns_as_torch():
    for lib in (torch, ml):
        with pytest.warns(UserWarning, match="torch.range is deprecated"):
            lib.range(0, 3)


def test_nextafter_gradient_as_torch():
    """torch's derivative: 1 for input (one ulp away), 0 for other."""
    grads = []
    for lib in (torch, ml):
        x = lib.tensor([1.0, -2.0], requires_grad=True)
        other = lib.tensor([2.0], requires_grad=True)
        y = lib.nextafter(x, other)
        assert y.requires_grad and y.grad_fn.name() == "NextafterBackward0"
        (y * lib.tensor([3.0, 4.0])).sum().backward()
        grads.append((x.grad.tolist(), other.grad.tolist()))
    assert grads[0] == grads[1]


def test_scatter_and_renorm_node_names():
    for call in ["lib.diagonal_scatter(a, lib.ones(2))", "lib.select_scatter(a, lib.ones(2), 0, 0)",
                 "lib.slice_scatter(a, lib.ones(1, 2), 0, 1)", "lib.renorm(a, 2, 0, 1.0)", "lib.frexp(a).mantissa"]:
        names = [eval(call, {"lib": lib, "a": lib.ones(2, 2, requires_grad=True)}).grad_fn.name()
                 for lib in (torch, ml)]
        assert names[0] == names[1], call


# --- on the cuda device (tests/fake_cupy.py's stand-in: the host round trip and the device's arrays) ------

ON_DEVICE = ["lib.erfc(x)", "lib.erfinv(x / 10)", "lib.lgamma(x.abs() + 0.5)", "lib.digamma(x.abs() + 0.5)",
             "lib.polygamma(2, x.abs() + 0.5)", "lib.mvlgamma(x.abs() + 2, 3)", "lib.i0(x)", "lib.special.i1(x)",
             "lib.special.ndtri(x.sigmoid())", "lib.special.log_ndtr(x)", "lib.special.entr(x.abs())",
             "lib.special.ndtr(x)", "lib.special.xlog1py(x, x.abs())", "lib.special.i0e(x * 30)",
             "lib.special.i1e(x * 30)", "lib.special.zeta(2.5, x.abs() + 0.5)", "lib.renorm(x.reshape(2, 3), 2, 0, 1.0)",
             "lib.frexp(x).mantissa", "lib.nextafter(x, x * 0)", "lib.gradient(x.reshape(2, 3), dim=1)[0]",
             "lib.gradient(x.reshape(2, 3), spacing=(lib.tensor([0.0, 1.0, 3.0], dtype=lib.float64, "
             "device=x.device),), dim=1)[0]"]


@pytest.mark.parametrize("call", ON_DEVICE)
def test_on_the_cuda_stand_in_as_on_the_cpu(call, monkeypatch):
    import fake_cupy
    fake_cupy.install(monkeypatch)
    outs = []
    for device in ("cpu", "cuda"):
        x = ml.tensor([0.3, -1.2, 2.5, 0.7, -0.4, 1.9], dtype=ml.float64, device=device, requires_grad=True)
        y = eval(call, {"lib": ml, "x": x})
        y.sum().backward()
        assert y.device.type == device
        outs.append((y.detach().cpu().numpy(), x.grad.cpu().numpy()))
    for got, want in zip(outs[1], outs[0]):
        np.testing.assert_allclose(got, want, rtol=1e-14)
