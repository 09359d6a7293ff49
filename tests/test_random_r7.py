"""The same seed gives torch's CPU random numbers (torch 2.13): every random function minilora shares
with torch, called as users call them, compared value for value (``tolist()`` equality) after
``manual_seed`` or with a ``Generator``, and draws interleaved so that both streams must stay in
lockstep."""
import math
import warnings

import numpy as np
import pytest

import minilora as ml
import minilora.nn.functional as MF

torch = pytest.importorskip("torch")
F = torch.nn.functional

SEEDS = [0, 42, 2 ** 32 + 5, -1, 123456789]
SIZES = [0, 1, 15, 16, 17, 33, 1000]
FLOATS = ["float32", "float64", "float16", "bfloat16"]
INTS = ["int8", "uint8", "int16", "int32", "int64"]


def both(seed, call):
    """``call(lib)`` for torch and minilora, each seeded with ``seed`` first; as lists."""
    results = []
    for lib in (torch, ml):
        lib.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = call(lib)
        results.append(_as_list(out))
    return results


def _as_list(out):
    if isinstance(out, (list, tuple)):
        return [_as_list(o) for o in out]
    if out.dtype in (torch.bfloat16, ml.bfloat16) or str(out.dtype).endswith("float16"):
        out = out.float()  # (tolist of a 16-bit tensor: compare the exact float values)
    return out.tolist()


def assert_same(seed, call):
    expected, got = both(seed, call)
    assert got == expected


# ---- the engine and its state ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_state_bytes_are_torchs(seed):
    torch.manual_seed(seed)
    ml.manual_seed(seed)
    assert ml.get_rng_state().tolist() == torch.get_rng_state().tolist()
    torch.rand(5), ml.rand(5)
    torch.randn(3, dtype=torch.float64), ml.randn(3, dtype=ml.float64)  # (leaves a cached normal)
    assert ml.get_rng_state().tolist() == torch.get_rng_state().tolist()
    assert ml.get_rng_state().dtype == ml.uint8 and ml.initial_seed() == torch.initial_seed()


def test_a_torch_state_continues_in_minilora_and_back():
    torch.manual_seed(3)
    torch.randn(5)  # (a cached second normal in the state)
    ml.set_rng_state(ml.tensor(torch.get_rng_state().numpy()))
    assert ml.randn(3).tolist() == torch.randn(3).tolist()
    torch.set_rng_state(torch.tensor(ml.get_rng_state().numpy()))
    assert torch.rand(4).tolist() == ml.rand(4).tolist()


def test_state_round_trips_replay_the_same_draws():
    ml.manual_seed(9)
    ml.randn(3)
    state = ml.get_rng_state()
    first = ml.randn(5).tolist() + ml.rand(2).tolist()
    ml.set_rng_state(state)
    assert ml.randn(5).tolist() + ml.rand(2).tolist() == first
    g = ml.Generator().manual_seed(4)
    saved = g.get_state()
    a = ml.randn(3, generator=g).tolist()
    assert ml.randn(3, generator=g.set_state(saved)).tolist() == a


def test_an_old_numpy_state_is_refused_clearly():
    with pytest.raises(ValueError, match="older minilora"):
        ml.set_rng_state({"bit_generator": "PCG64", "state": {}})
    with pytest.raises(RuntimeError, match="5056"):
        ml.set_rng_state(ml.zeros(10, dtype=ml.uint8))


def test_fork_rng_restores_the_stream():
    ml.manual_seed(1)
    with ml.random.fork_rng():
        ml.manual_seed(5)
        ml.randn(20)
    torch.manual_seed(1)
    assert ml.rand(3).tolist() == torch.rand(3).tolist() and ml.initial_seed() == 1


# ---- rand / uniform_ ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_rand_every_size(seed, dtype):
    for n in SIZES:
        assert_same(seed, lambda t: t.rand(n, dtype=getattr(t, dtype)))


@pytest.mark.parametrize("call", [
    lambda t: t.rand(2, 3),
    lambda t: t.rand((2, 3)),
    lambda t: t.rand(size=(2, 3), generator=t.Generator().manual_seed(7)),
    lambda t: t.rand([4], dtype=t.float64),
    lambda t: t.empty(5, 7).uniform_(-1, 1),
    lambda t: t.empty(5, 7, dtype=t.float64).uniform_(-3.3, 7.1),
    lambda t: t.empty(300, dtype=t.float16).uniform_(-100, 5),
    lambda t: t.empty(300, dtype=t.bfloat16).uniform_(-3.3, 7.1),
    lambda t: t.empty(6, 4).t().uniform_(),  # non-contiguous: drawn in memory order
    lambda t: t.empty(3, 4, 5).permute(2, 0, 1).uniform_(),
    lambda t: t.nn.init.uniform_(t.empty(4, 6), a=-1, b=1),
    lambda t: t.nn.init.normal_(t.empty(40, 3, dtype=t.float64), std=0.02),
    lambda t: t.nn.init.kaiming_uniform_(t.empty(8, 5), a=math.sqrt(5)),
    lambda t: t.nn.Linear(7, 3).weight,
    lambda t: t.rand_like(t.zeros(3, 3, dtype=t.float64)),
])
def test_uniform_calls(call):
    for seed in (0, 42, -1):
        assert_same(seed, call)


# ---- randn / normal_ ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_randn_every_size(seed, dtype):
    for n in SIZES:
        assert_same(seed, lambda t: t.randn(n, dtype=getattr(t, dtype)))


def test_float32_block_normals_bit_for_bit():
    """torch's float32 normal_fill (avx_mathfun's log and sincos, fused multiply-adds): exact."""
    for seed in range(12):
        for call in (lambda t: t.randn(4000), lambda t: t.empty(33).normal_(0.3, 2.5),
                     lambda t: t.nn.init.normal_(t.empty(64, 8), std=0.02), lambda t: t.randn(50, 40).half()):
            assert_same(seed, call)


@pytest.mark.parametrize("call", [
    lambda t: t.randn(3, generator=t.Generator().manual_seed(5), dtype=t.float64),
    lambda t: t.randn((2, 5), dtype=t.float64),
    lambda t: t.empty(5).normal_(2.0, 0.5),
    lambda t: t.empty(40, dtype=t.float64).normal_(-1.5, 3.0),
    lambda t: t.empty(6, 5, dtype=t.float64).t().normal_(),  # non-contiguous: one pair at a time
    lambda t: t.empty(6, 5).t().normal_(),
    lambda t: t.normal(0.5, 2.0, (3, 4)),
    lambda t: t.normal(0.5, 2.0, size=(40,), dtype=t.float64),
    lambda t: t.normal(t.zeros(3), t.ones(3) * 2),
    lambda t: t.normal(t.arange(5, dtype=t.float64), 0.5),
    lambda t: t.normal(1.0, t.full((4,), 3.0, dtype=t.float64)),
    lambda t: t.normal(t.zeros(2, 3, dtype=t.float64), t.ones(3, dtype=t.float64)),
    lambda t: t.randn_like(t.zeros(5)),
])
def test_normal_calls(call):
    for seed in (0, 42, -1):
        assert_same(seed, call)


def test_cached_normal_carries_over_calls_as_torchs():
    """torch's one-at-a-time Box-Muller keeps the second value for the next small draw."""
    for seed in (0, 7):
        assert_same(seed, lambda t: [t.randn(3), t.randn(1), t.randn(2), t.randn(5, dtype=t.float64),
                                     t.rand(2), t.randn(1)])


def test_interleaved_calls_stay_in_lockstep():
    def calls(t):
        return [t.randn(5), t.rand(3), t.randint(0, 10, (4,)), t.randperm(6), t.randn(2, dtype=t.float64),
                t.empty(9).bernoulli_(0.3), F.dropout(t.ones(7), 0.5) if t is torch else MF.dropout(t.ones(7), 0.5),
                t.multinomial(t.tensor([0.1, 0.2, 0.7]), 2), t.rand(2, 2, dtype=t.float64)]
    for seed in SEEDS:
        assert_same(seed, calls)


# ---- integers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", INTS + ["float32", "float64", "float16", "bfloat16"])
def test_randint(dtype):
    ranges = [(0, 2), (0, 10), (-5, 100), (3, 127)]
    if dtype in ("int64", "float64"):
        ranges += [(0, 2 ** 32 + 3), (-2 ** 40, 2 ** 40)]
    for seed in (0, 42, -1):
        for low, high in ranges:
            if dtype == "uint8" and low < 0:
                continue
            assert_same(seed, lambda t: t.randint(low, high, (50,), dtype=getattr(t, dtype)))
    assert_same(3, lambda t: t.randint(10, (3, 3), dtype=getattr(t, dtype)))
    assert_same(3, lambda t: t.randint(low=2, high=9, size=(4,), generator=t.Generator().manual_seed(1)))


@pytest.mark.parametrize("dtype", INTS + ["bool", "float32", "float64", "float16", "bfloat16"])
def test_random_(dtype):
    for seed in (0, 5):
        assert_same(seed, lambda t: t.empty(40, dtype=getattr(t, dtype)).random_())
        assert_same(seed, lambda t: t.empty(40, dtype=getattr(t, dtype)).random_(2))
        assert_same(seed, lambda t: t.empty(8, 5, dtype=getattr(t, dtype)).t().random_(1, 2))
    if dtype in ("int64", "float32", "float64", "bfloat16"):
        assert_same(1, lambda t: t.empty(30, dtype=getattr(t, dtype)).random_(-2 ** 63, None))


def test_int64_scalar_random_as_dataloader_seeds_workers():
    """DataLoader's base seed: ``torch.empty((), dtype=torch.int64).random_().item()``."""
    for seed in SEEDS:
        assert_same(seed, lambda t: t.empty((), dtype=t.int64).random_())


def test_randint_like():
    assert_same(2, lambda t: [t.randint_like(t.zeros(3, 4), 10), t.randint_like(t.zeros(5, dtype=t.int32), 3, 9)])


@pytest.mark.parametrize("n", [0, 1, 2, 5, 17, 1000])
def test_randperm(n):
    for seed in (0, 42, -1):
        assert_same(seed, lambda t: t.randperm(n))
    assert_same(0, lambda t: t.randperm(n, dtype=t.float32, generator=t.Generator().manual_seed(3)))


# ---- bernoulli and dropout --------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda t: t.empty(100).bernoulli_(0.3),
    lambda t: t.empty(50, dtype=t.int64).bernoulli_(0.5),
    lambda t: t.empty(6, 5, dtype=t.bool).t().bernoulli_(0.5),
    lambda t: t.empty(20).bernoulli_(t.linspace(0, 1, 20)),
    lambda t: t.empty(20).bernoulli_(t.linspace(0, 1, 20, dtype=t.float64)),
    lambda t: t.bernoulli(t.rand(30)),
    lambda t: t.bernoulli(t.rand(30, dtype=t.float64)),
    lambda t: t.bernoulli(t.rand(30).half()),
    lambda t: t.bernoulli(t.ones(10), 0.25),
    lambda t: t.bernoulli(t.ones(10), p=0.5, generator=t.Generator().manual_seed(8)),
    lambda t: t.ones(4, 4).bernoulli(0.5),
])
def test_bernoulli_calls(call):
    for seed in (0, 42, -1):
        assert_same(seed, call)


X = np.random.default_rng(1).standard_normal((4, 6, 3)).astype(np.float32)


def _functional(t):
    return F if t is torch else MF


@pytest.mark.parametrize("call", [
    lambda t, p: _functional(t).dropout(t.tensor(X), p),
    lambda t, p: _functional(t).dropout(t.tensor(X), p=p, training=True),
    lambda t, p: _functional(t).dropout(t.tensor(X).transpose(0, 2), p),
    lambda t, p: _functional(t).dropout(t.tensor(X).double(), p),
    lambda t, p: _functional(t).dropout(t.tensor(X).half(), p),
    lambda t, p: _functional(t).dropout(t.tensor(X).bfloat16(), p),
    lambda t, p: _functional(t).dropout(t.tensor(X).clone(), p, inplace=True),
    lambda t, p: t.nn.Dropout(p)(t.tensor(X)),
    lambda t, p: t.nn.Dropout(p=p)(t.tensor(X) * 2),
    lambda t, p: _functional(t).dropout1d(t.tensor(X), p),
    lambda t, p: _functional(t).dropout1d(t.tensor(X[0]), p),
    lambda t, p: _functional(t).dropout2d(t.tensor(X[None]), p),
    lambda t, p: t.nn.Dropout3d(p)(t.tensor(X[None, None])),
    lambda t, p: _functional(t).alpha_dropout(t.tensor(X), p, True),
    lambda t, p: t.nn.AlphaDropout(p).train()(t.tensor(X)),
    lambda t, p: _functional(t).feature_alpha_dropout(t.tensor(X), p, True),
    lambda t, p: _functional(t).rrelu(t.tensor(X), training=True),
    lambda t, p: _functional(t).rrelu(t.tensor(X).double(), 0.1, 0.3, training=True),
])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 1.0])
def test_dropout_masks(call, p):
    for seed in (0, 42, -1):
        assert_same(seed, lambda t: call(t, p))


def test_dropout_gradient_uses_the_same_mask():
    grads = []
    for t, f in ((torch, F), (ml, MF)):
        t.manual_seed(4)
        x = t.tensor(X, requires_grad=True)
        f.dropout(x, 0.4).sum().backward()
        grads.append(x.grad.tolist())
    assert grads[0] == grads[1]


# ---- multinomial and the other distributions --------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda t: t.multinomial(t.tensor([0.1, 0.2, 0.3, 0.4]), 1),
    lambda t: t.multinomial(t.tensor([1.0, 2, 3, 4]), 3),
    lambda t: t.multinomial(t.tensor([[1.0, 2, 3, 4], [4, 3, 2, 1]]), 4),
    lambda t: t.multinomial(t.tensor([[1.0, 2, 3, 4], [4, 3, 2, 1]]), 6, replacement=True),
    lambda t: t.multinomial(t.rand(3, 50, dtype=t.float64), 20, True),
    lambda t: t.multinomial(t.rand(2, 30), 5, generator=t.Generator().manual_seed(2)),
    lambda t: t.tensor([0.5, 0.5]).multinomial(10, True),
])
def test_multinomial(call):
    for seed in (0, 42, -1):
        assert_same(seed, call)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("call", [
    lambda t, d: t.empty(40, dtype=d).exponential_(),
    lambda t, d: t.empty(40, dtype=d).exponential_(1.5),
    lambda t, d: t.empty(40, dtype=d).cauchy_(0.5, 2.0),
    lambda t, d: t.empty(40, dtype=d).log_normal_(0.5, 0.7),
    lambda t, d: t.empty(5, dtype=d).log_normal_(),
    lambda t, d: t.empty(40, dtype=d).geometric_(0.3),
    lambda t, d: t.empty(7, 6, dtype=d).t().exponential_(),
])
def test_other_distributions(call, dtype):
    for seed in (0, 42, -1):
        assert_same(seed, lambda t: call(t, getattr(t, dtype)))


def test_geometric_into_integers():
    assert_same(6, lambda t: t.empty(30, dtype=t.int64).geometric_(0.2))


@pytest.mark.parametrize("call", [
    lambda t: t.poisson(t.tensor([0.5, 3.0, 0.0, 9.9, 10.0, 15.5, 100.0, 1000.3])),
    lambda t: t.poisson(t.linspace(0, 50, 60, dtype=t.float64)),
    lambda t: t.poisson(t.full((3, 2), 4.0), generator=t.Generator().manual_seed(1)),
    lambda t: [t.poisson(t.tensor([1e6, 2.5e4, 2.0])), t.rand(2)],
])
def test_poisson(call):
    for seed in (0, 42, -1):
        assert_same(seed, call)


def test_sampling_in_generate_is_transformers_multinomial():
    """generate(do_sample=True) draws transformers' torch.multinomial(probs, 1) from the same
    stream: the picks for the same seed and the same probabilities are torch's."""
    from minilora.nn.generation import _draw
    logits = np.random.default_rng(0).standard_normal((3, 50)).astype(np.float32)
    torch.manual_seed(5)
    expected = [torch.multinomial(torch.softmax(torch.tensor(logits), -1), 1)[:, 0].tolist() for _ in range(4)]
    ml.manual_seed(5)
    assert [_draw(logits).tolist() for _ in range(4)] == expected



def test_a_checkpoint_with_the_old_numpy_state_is_refused_before_resuming():
    from minilora import train
    with pytest.raises(ValueError, match="older minilora"):
        train._check_generator_states({"rng": {"bit_generator": "PCG64", "state": {"state": 1, "inc": 3}}})
    train._check_generator_states({"rng": ml.get_rng_state().numpy()})  # (today's state passes)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64", "int32", "int64", "int16", "uint8"])
def test_randint_wide_ranges_words_and_refusals(dtype):
    """A range of 2**28 or more draws 64-bit words; a float dtype moves an end its spacing cannot
    tell from its neighbour; out-of-range ends are refused with torch's error (type and message)."""
    ranges = [(0, 2 ** 28 - 1), (0, 2 ** 28), (3, 2 ** 31 - 1), (-2 ** 30 - 3, 2 ** 30 + 7), (-2 ** 40, 2 ** 40),
              (5, 2 ** 53 + 5), (-70000, -3), (1000, 1003), (5, 3)]
    for low, high in ranges:
        outcomes = []
        for t in (torch, ml):
            t.manual_seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    outcomes.append(t.randint(low, high, (20,), dtype=getattr(t, dtype)).double().tolist())
                    outcomes.append(t.empty(20, dtype=getattr(t, dtype)).random_(low, None).double().tolist())
                except RuntimeError as exc:
                    outcomes.append(str(exc).split("\n")[0])
        assert outcomes[len(outcomes) // 2:] == outcomes[:len(outcomes) // 2], (low, high)
