"""Random ops give torch's numbers -- and torch's errors -- for the same seed, the whole class (round 20's sweep).

Each case runs a call as torch users write it, in torch and in minilora, each seeded alike, and compares what it
returns (exact values), the global generator's state after it (``get_rng_state()``'s bytes) and the next draw (a
call that consumed another number of words shows there), or torch's error and the state it leaves. The sweep that
found these checked the rest of the class too (factories, in-place fills in every dtype and layout, ``generator=``,
nn.init, dropout in every spelling, rrelu, SDPA/MultiheadAttention dropout masks, the samplers, random_split,
DataLoader, state round trips): those already were torch's and are covered by test_random_r7 / test_seeded_r7."""
import warnings

import numpy as np
import pytest

import minilora as ml
import minilora.nn.functional as MF

torch = pytest.importorskip("torch")
F = torch.nn.functional

X = {n: np.random.default_rng(n).standard_normal((3, 4, 2, 3, 2, 2)[:n]).astype(np.float32) for n in range(7)}


def _functional(t):
    return F if t is torch else MF


def _outcome(t, call, seed):
    """What ``call(t)`` gives after ``t.manual_seed(seed)``: its values (or its error), the state, the next draw."""
    t.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = call(t)
            if out is not None and out.is_complex():
                out = t.view_as_real(out)
            values = None if out is None else [str(out.dtype).split(".")[-1], tuple(out.shape),
                                               out.detach().double().tolist()]
        except Exception as error:  # noqa: BLE001 (torch's own error is what is compared)
            values = [type(error).__name__, str(error)]
    state = np.asarray(t.get_rng_state().numpy()).tobytes()
    return values, state, t.rand(3, dtype=t.float64).tolist()


def assert_torchs(call, seeds=(0, 42)):
    for seed in seeds:
        expected, got = _outcome(torch, call, seed), _outcome(ml, call, seed)
        assert got[0] == expected[0]
        assert got[1] == expected[1], "the generator's state after the call is not torch's"
        assert got[2] == expected[2], "the next draw is not torch's"


# ---- dropout3d: any input but a 5-D one is one sample of a batch (torch unsqueezes it) -------------------------
@pytest.mark.parametrize("ndim", [1, 2, 3, 6])
@pytest.mark.parametrize("inplace", [False, True])
def test_dropout3d_of_an_input_of_another_rank_draws_torchs_mask(ndim, inplace):
    assert_torchs(lambda t: _functional(t).dropout3d(t.tensor(X[ndim]), 0.4, True, inplace))
    assert_torchs(lambda t: _functional(t).dropout3d(t.tensor(X[ndim]), p=0.4, training=True, inplace=inplace))


@pytest.mark.parametrize("dtype", ["float64", "float16"])  # (bfloat16: the same path, and ml_dtypes' import)
def test_dropout3d_module_on_a_3d_input(dtype):
    assert_torchs(lambda t: t.nn.Dropout3d(0.3)(t.tensor(X[3]).to(getattr(t, dtype))))


def test_dropout3d_gradient_of_a_3d_input_is_torchs():
    def gradient(t):
        x = t.tensor(X[3], requires_grad=True)
        _functional(t).dropout3d(x, 0.5).sum().backward()
        return x.grad
    assert_torchs(gradient)


# ---- feature dropout: torch's shortcuts come before its check of the input's rank ------------------------------
@pytest.mark.parametrize("call", [
    lambda t: _functional(t).dropout2d(t.tensor(X[1]), 0.5, training=False),
    lambda t: _functional(t).dropout2d(t.tensor(X[1]), 0.0),
    lambda t: _functional(t).dropout2d(t.tensor(X[1]), p=1.0),
    lambda t: _functional(t).dropout2d(t.zeros(0), 0.5),
    lambda t: _functional(t).dropout2d(t.tensor(X[0]), 1.0),
    lambda t: t.nn.Dropout2d(1.0)(t.tensor(X[1])),
    lambda t: _functional(t).feature_alpha_dropout(t.tensor(X[1]), 0.5, True),
    lambda t: _functional(t).feature_alpha_dropout(t.tensor(X[0]), p=0.5, training=True),
    lambda t: t.nn.FeatureAlphaDropout(0.2)(t.tensor(X[1])),
], ids=["2d-eval", "2d-p0", "2d-p1", "2d-empty", "2d-0d-p1", "Dropout2d-p1", "fad-1d", "fad-0d", "FAD-1d"])
def test_feature_dropout_of_fewer_than_two_dimensions_is_torchs(call):
    assert_torchs(call)


# ---- integer inputs: torch's errors, not zeros ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["int64", "uint8", "bool"])
@pytest.mark.parametrize("name, module", [("dropout", "Dropout"), ("dropout1d", "Dropout1d"), ("dropout2d", "Dropout2d"),
                                          ("alpha_dropout", "AlphaDropout"),
                                          ("feature_alpha_dropout", "FeatureAlphaDropout")])
def test_dropout_of_an_integer_tensor_draws_its_noise_then_is_torchs_error(name, module, dtype):
    assert_torchs(lambda t: getattr(_functional(t), name)(t.ones(2, 3, 2, dtype=getattr(t, dtype)), 0.5, True))
    assert_torchs(lambda t: getattr(t.nn, module)(p=0.5)(t.ones(2, 3, 2, dtype=getattr(t, dtype))))


@pytest.mark.parametrize("call", [
    lambda t: _functional(t).rrelu(t.tensor(X[2]).half(), training=True),
    lambda t: _functional(t).rrelu(t.zeros(0, dtype=t.float16), 0.1, 0.3, True),
    lambda t: _functional(t).rrelu_(t.tensor(X[2]).half(), training=True),
    lambda t: t.nn.RReLU()(t.tensor(X[2]).half()),
    lambda t: t.rrelu(t.ones(3, dtype=t.int64), training=True),
    lambda t: _functional(t).rrelu(t.ones(3, dtype=t.bool), training=True),
], ids=["half", "half-empty", "rrelu_", "module", "int64", "bool"])
def test_rrelu_training_without_a_kernel_is_torchs_error(call):
    assert_torchs(call)


# ---- nn.init: an integer tensor is torch's error (trunc_normal_ looped forever), 16-bit orthogonal_ too ----------
@pytest.mark.parametrize("dtype", ["int64", "uint8", "bool"])
@pytest.mark.parametrize("call", [
    lambda t, w: t.nn.init.uniform_(w),
    lambda t, w: t.nn.init.normal_(w, 0.0, 0.02),
    lambda t, w: t.nn.init.trunc_normal_(w, std=0.02),
    lambda t, w: t.nn.init.trunc_normal_(w, 0.0, 1.0, 3.0, 4.0),
    lambda t, w: t.nn.init.xavier_uniform_(w),
    lambda t, w: t.nn.init.xavier_normal_(w, gain=2.0),
    lambda t, w: t.nn.init.kaiming_uniform_(w, a=5 ** 0.5),
    lambda t, w: t.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"),
    lambda t, w: t.nn.init.orthogonal_(w),
    lambda t, w: t.nn.init.sparse_(w, 0.3),
], ids=["uniform_", "normal_", "trunc_normal_", "trunc_normal_-tail", "xavier_uniform_", "xavier_normal_",
        "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_"])
def test_init_of_an_integer_tensor_is_torchs_error(call, dtype):
    assert_torchs(lambda t: call(t, t.zeros(4, 5, dtype=getattr(t, dtype))))


@pytest.mark.parametrize("dtype", ["float16"])  # (bfloat16 refuses in the same words; its import costs seconds)
@pytest.mark.parametrize("shape", [(3, 5), (4, 3, 2)])
def test_orthogonal_of_a_16bit_tensor_draws_then_refuses_as_torch(dtype, shape):
    assert_torchs(lambda t: t.nn.init.orthogonal_(t.empty(shape, dtype=getattr(t, dtype))))
    assert_torchs(lambda t: t.nn.init.orthogonal_(t.empty(shape, dtype=getattr(t, dtype)), gain=2,
                                                  generator=t.Generator().manual_seed(3)))


# ---- torch.normal of a complex mean: torch's complex normal_ (each part with std / sqrt(2)), not a refusal ---------
@pytest.mark.parametrize("call", [
    lambda t: t.normal(t.zeros(20, dtype=t.complex64), 2.0),
    lambda t: t.normal(t.ones(3, dtype=t.complex64), t.ones(3)),
    lambda t: t.normal(t.ones(3, dtype=t.complex64)),
    lambda t: t.normal(t.ones(3, dtype=t.complex128) * (1 + 2j), 0.5),
    lambda t: t.normal(t.ones(3, 4, dtype=t.complex64).t(), 0.5),
    lambda t: t.normal(mean=t.ones(9, dtype=t.complex64), std=t.full((2, 1), 2.0)),
    lambda t: t.normal(mean=t.ones(9, dtype=t.complex64), std=3.0, generator=t.Generator().manual_seed(2)),
    lambda t: t.normal(t.ones(3), t.ones(3, dtype=t.complex64)),
], ids=["block", "std-tensor", "std-default", "complex128", "transposed", "broadcast", "generator", "complex-std"])
def test_normal_of_a_complex_mean_is_torchs(call):
    assert_torchs(call)


# ---- bounds and probabilities: torch's checks, and the draws made before its kernel's check fails ---------------
INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("low, high, dtype", [
    (0, INF, "float32"), (0, INF, "float64"), (0, INF, "float16"), (0, INF, "complex64"), (-INF, 0, "float32"),
    (-INF, 0, "float16"), (NAN, 1, "float32"), (NAN, 1, "float64"), (0, 70000, "float16"), (-60000, 60000, "float16"),
    (-3e38, 3e38, "float32"), (-3e38, 3e38, "complex64"), (-1e308, 1e308, "float64"), (-1e308, 1e308, "float32"),
])
def test_uniform_bounds_past_the_dtypes_range_are_torchs_error(low, high, dtype):
    assert_torchs(lambda t: t.zeros(3, dtype=getattr(t, dtype)).uniform_(low, high))
    assert_torchs(lambda t: t.nn.init.uniform_(t.zeros(3, dtype=getattr(t, dtype)), a=low, b=high))


@pytest.mark.parametrize("call", [
    lambda t: t.bernoulli(t.tensor([0.5, 0.2, 1.5, 0.3])),
    lambda t: t.bernoulli(t.tensor([0.5, 0.2, 1.5], dtype=t.float64)),
    lambda t: t.bernoulli(t.tensor([0.5, float("nan")])),
    lambda t: t.bernoulli(t.tensor([[0.5, 0.2, 0.1], [0.5, 2.0, 0.1]]).t()),
    lambda t: t.zeros(3).bernoulli_(t.tensor([0.2, 1.5, 0.1])),
    lambda t: t.zeros(2, 3).bernoulli_(p=t.tensor([0.2, 0.3, 1.1], dtype=t.float64)),
    lambda t: t.zeros(3, 2).t().bernoulli_(t.tensor([[0.2, 0.3, 0.4], [0.1, 1.1, 0.2]])),
    lambda t: t.poisson(t.tensor([1.0, 20.0, -1.0, 2.0])),
    lambda t: t.poisson(t.tensor([3.0, float("nan")])),
    lambda t: t.poisson(t.tensor([[1.0, 2.0], [-1.0, 3.0]]).t()),
], ids=["bernoulli", "bernoulli-f64", "bernoulli-nan", "bernoulli-T", "bernoulli_", "bernoulli_-broadcast",
        "bernoulli_-T", "poisson", "poisson-nan", "poisson-T"])
def test_a_probability_or_rate_outside_draws_as_far_as_torchs_kernel(call):
    assert_torchs(call)


@pytest.mark.parametrize("weights", [[[1.0, 2.0], [1.0, -1.0]], [[1.0, 2.0], [0.0, 0.0]], [[1.0, 2.0], [1.0, NAN]],
                                     [[1.0, INF]], [[INF, -1.0]]],
                         ids=["negative", "zero-sum", "nan", "inf", "inf-first"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_multinomial_with_replacement_checks_each_row_as_torchs_kernel(weights, dtype):
    """Several samples with replacement: torch's kernel checks a row as it reaches it (the rows before have
    drawn), in its own words; one sample, or none replaced, keeps the check of the whole tensor first."""
    assert_torchs(lambda t: t.multinomial(t.tensor(weights, dtype=getattr(t, dtype)), 3, True))
    assert_torchs(lambda t: t.multinomial(t.tensor(weights, dtype=getattr(t, dtype)), num_samples=4, replacement=True))


def test_weighted_random_sampler_with_a_negative_weight_is_torchs_error():
    def draw(t):
        data = torch.utils.data if t is torch else ml.utils.data
        return t.tensor(list(data.WeightedRandomSampler([1.0, -1.0, 2.0], 5)))
    assert_torchs(draw)


def test_dropout_probability_outside_is_torchs_error():
    assert_torchs(lambda t: _functional(t).dropout(t.ones(3), 1.5))
    assert_torchs(lambda t: t.nn.Dropout(p=-0.1))


# ---- the Generator's API --------------------------------------------------------------------------------------
def test_clone_state_draws_what_the_generator_draws():
    for t in (torch, ml):
        g = t.Generator().manual_seed(5)
        t.randn(1, generator=g, dtype=t.float64)  # (a cached second normal travels with the state)
        clone = g.clone_state()
        assert clone.initial_seed() == 5
        assert t.randn(3, generator=clone, dtype=t.float64).tolist() == t.randn(3, generator=g, dtype=t.float64).tolist()
    g, tg = ml.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ml.rand(7, generator=g), torch.rand(7, generator=tg)
    assert ml.rand(4, generator=g.clone_state()).tolist() == torch.rand(4, generator=tg.clone_state()).tolist()


@pytest.mark.parametrize("call", [
    lambda t, g: g.get_offset(),
    lambda t, g: g.set_offset(4),
    lambda t, g: g.graphsafe_get_state(),
    lambda t, g: g.graphsafe_set_state(g),
])
def test_philox_and_graph_methods_are_torchs_cpu_errors(call):
    errors = []
    for t in (torch, ml):
        with pytest.raises(Exception) as caught:
            call(t, t.Generator())
        errors.append((type(caught.value).__name__, str(caught.value)))
    assert errors[1] == errors[0]


def test_a_cuda_generators_offset_says_philox_is_not_reproduced(monkeypatch):
    monkeypatch.setattr(ml.random, "_philox_noted", False, raising=False)
    with pytest.warns(UserWarning, match="Philox"):
        generator = ml.Generator(device="cuda")
    with pytest.raises(RuntimeError, match="Philox"):
        generator.get_offset()


@pytest.mark.parametrize("call", [
    lambda t: t.set_rng_state([1, 2]),
    lambda t: t.set_rng_state(t.zeros(5056)),
    lambda t: t.set_rng_state(t.zeros(10, dtype=t.uint8)),
    lambda t: t.set_rng_state(t.zeros(5048, dtype=t.uint8)),
    lambda t: t.Generator().set_state(t.ones(7, dtype=t.uint8)),
    lambda t: t.manual_seed(2 ** 64),
], ids=["list", "float-tensor", "short", "legacy-size", "generator-short", "seed-overflow"])
def test_a_bad_state_or_seed_is_torchs_error(call):
    assert_torchs(call)


def test_a_state_as_bytes_sets_the_generator():
    state = bytes(torch.Generator().manual_seed(8).get_state().numpy())
    ml.manual_seed(3)
    ml.set_rng_state(state)
    torch.set_rng_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    assert ml.rand(3).tolist() == torch.rand(3).tolist()


def test_thread_safe_generator_outside_a_thread_worker_is_none():
    assert ml.random.thread_safe_generator() is torch.random.thread_safe_generator() is None


# ---- cuda: torch's Philox stream is not reproduced, and minilora says so (once) rather than differ silently -------
@pytest.fixture
def fake_cuda(monkeypatch):
    fake_cupy = pytest.importorskip("fake_cupy")
    fake_cupy.install(monkeypatch)
    monkeypatch.setattr(ml.random, "_philox_noted", False, raising=False)


@pytest.mark.parametrize("call", [
    lambda: ml.randn(3, device="cuda"),
    lambda: ml.randperm(4, device="cuda"),
    lambda: ml.bernoulli(ml.full((3,), 0.5, device="cuda")),
    lambda: ml.zeros(3, device="cuda").uniform_(),
    lambda: ml.nn.functional.dropout(ml.ones(3, device="cuda"), 0.5),
    lambda: ml.nn.Linear(3, 4, device="cuda"),
    lambda: ml.Generator(device="cuda"),
], ids=["randn", "randperm", "bernoulli", "uniform_", "dropout", "Linear", "Generator"])
def test_a_draw_on_cuda_says_torchs_philox_numbers_are_not_reproduced(call, fake_cuda):
    with pytest.warns(UserWarning, match="Philox"):
        call()
    with warnings.catch_warnings():  # (once per process: a training loop is not flooded)
        warnings.simplefilter("error")
        call()


@pytest.mark.parametrize("call", [
    lambda t: t.cuda.manual_seed(3),
    lambda t: t.cuda.manual_seed_all(seed=2 ** 70),
    lambda t: t.cuda.manual_seed("5"),
    lambda t: t.cuda.manual_seed(None),
    lambda t: t.cuda.seed(),
    lambda t: t.cuda.seed_all(),
], ids=["manual_seed", "manual_seed_all", "str", "None", "seed", "seed_all"])
def test_cuda_seeding_without_a_gpu_is_torchs(call):
    """A seed-everything helper's torch.cuda lines: without a GPU torch ignores them (the CPU stream unchanged)."""
    assert_torchs(call)


@pytest.mark.parametrize("call", [
    lambda t: t.nn.init.trunc_normal_(t.zeros(3, dtype=t.complex64)),
    lambda t: t.nn.init.trunc_normal_(t.zeros(3, dtype=t.complex128), 0, 1, 3, 4),
    lambda t: t.nn.init.orthogonal_(t.zeros(3, 3, dtype=t.complex64)),
], ids=["trunc_normal_", "trunc_normal_-tail", "orthogonal_"])
def test_init_of_a_complex_tensor_draws_then_is_torchs_error(call):
    assert_torchs(call)


@pytest.mark.parametrize("bounds", [(), (0.0, 1.0, 3.0, 4.0)], ids=["normals", "tail"])
def test_trunc_normal_of_a_complex_tensor_leaves_torchs_draw_in_it(bounds):
    written = []
    for t in (torch, ml):
        t.manual_seed(1)
        weight = t.zeros(2, 3, dtype=t.complex64)
        with pytest.raises(NotImplementedError), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (the tail's "more than 2 std" warning, torch's too)
            t.nn.init.trunc_normal_(weight, *bounds)
        written.append(t.view_as_real(weight).tolist())
    assert written[1] == written[0]
