"""The same seed gives torch's numbers wherever minilora turns random numbers into weights, orders or
samples: ``torch.manual_seed(s); torch.nn.X(...)`` and ``minilora.manual_seed(s); minilora.nn.X(...)``
hold the same state_dict, to the last bit (torch's draws in torch's order with torch's formulas), and
leave the global generator at the same place (checked by one more ``rand`` on each side). The same for
``nn.init``, transformers' Llama init (and ``resize_token_embeddings``), PEFT's adapter inits, a seeded PEFT training run with dropout,
``torch.utils.data``'s shuffles and samplers, and ``generate(do_sample=True)``.

Not compared bit for bit (said where it happens): ``orthogonal_`` and PEFT's orthogonal/OLoRA inits (a
QR factorisation: LAPACK builds round differently), DoRA's magnitude (a norm, summed in another order)
and training losses (float32 sums in another order).
"""
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minilora  # noqa: E402
import minilora.nn as mnn  # noqa: E402
import minilora.utils.data as mdata  # noqa: E402
import torch.utils.data as tdata  # noqa: E402

SEEDS = (0, 1234)


def _values(tensor):
    """A tensor's dtype, shape and values as Python lists (16-bit ones through float32)."""
    name = str(tensor.dtype).split(".")[-1]
    values = tensor.float().tolist() if name in ("float16", "bfloat16") else tensor.tolist()
    return name, tuple(tensor.shape), values


def _state(module):
    return {key: _values(value.detach()) for key, value in module.state_dict().items()}


def _build_both(seed, make):
    """``make(lib)`` under ``lib.manual_seed(seed)`` for torch and minilora, with the next draw of each."""
    results = []
    for lib in (torch, minilora):
        lib.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = make(lib)
        results.append((built, lib.rand(3).tolist()))
    return results


def _dtyped(lib, kwargs):
    return {k: getattr(lib, v) if k == "dtype" else v for k, v in kwargs.items()}


# ---- 1. modules: reset_parameters as torch, in torch's order -----------------------------------------
MODULES = [
    ("Linear", (5, 3), {}), ("Linear", (20, 7), {"bias": False}), ("Linear", (4, 6), {"dtype": "float64"}),
    ("Linear", (5, 3), {"dtype": "bfloat16"}), ("Linear", (5, 3), {"dtype": "float16"}),
    ("Bilinear", (3, 4, 5), {}), ("Conv1d", (3, 4, 3), {}), ("Conv1d", (3, 4, 3), {"padding_mode": "reflect"}),
    ("Conv2d", (2, 6, 3), {"groups": 2}), ("Conv2d", (3, 4, (2, 3)), {"dtype": "float64", "bias": False}),
    ("ConvTranspose1d", (3, 4, 3), {}), ("ConvTranspose2d", (4, 2, (2, 3)), {"groups": 2}),
    ("Embedding", (10, 4), {}), ("Embedding", (10, 4), {"padding_idx": 1}), ("Embedding", (5, 2), {"padding_idx": -1}),
    ("EmbeddingBag", (10, 4), {"mode": "sum", "padding_idx": 0}),
    ("LSTM", (3, 4), {"num_layers": 2}), ("LSTM", (3, 4), {"bidirectional": True, "proj_size": 2}),
    ("GRU", (3, 4), {"dtype": "float64"}), ("RNN", (3, 5), {"num_layers": 2, "nonlinearity": "relu"}),
    ("LSTMCell", (3, 4), {}), ("GRUCell", (3, 4), {"bias": False}), ("RNNCell", (3, 4), {}),
    ("MultiheadAttention", (8, 2), {}), ("MultiheadAttention", (8, 2), {"kdim": 3, "vdim": 5}),
    ("MultiheadAttention", (6, 3), {"add_bias_kv": True, "dtype": "float64"}),
    ("TransformerEncoderLayer", (8, 2, 16), {}), ("TransformerDecoderLayer", (8, 2, 16), {"norm_first": True}),
    ("Transformer", (), dict(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16)),
    ("LayerNorm", (4,), {}), ("LayerNorm", ((2, 3),), {"bias": False}), ("RMSNorm", (4,), {}),
    ("BatchNorm1d", (4,), {}), ("GroupNorm", (2, 4), {}), ("InstanceNorm1d", (3,), {"affine": True}),
    ("PReLU", (), {}), ("PReLU", (3, 0.5), {}),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name,args,kwargs", MODULES, ids=[f"{m[0]}-{i}" for i, m in enumerate(MODULES)])
def test_module_init_is_torchs(seed, name, args, kwargs):
    (theirs, after_theirs), (ours, after_ours) = _build_both(
        seed, lambda lib: getattr(lib.nn, name)(*args, **_dtyped(lib, kwargs)))
    assert _state(ours) == _state(theirs)
    assert after_ours == after_theirs  # the same number of draws


@pytest.mark.parametrize("name,args,kwargs", [m for m in MODULES if hasattr(getattr(torch.nn, m[0]), "reset_parameters")])
def test_reset_parameters_draws_again_as_torch(name, args, kwargs):
    def build_and_reset(lib):
        module = getattr(lib.nn, name)(*args, **_dtyped(lib, kwargs))
        module.reset_parameters()
        return module
    (theirs, after_theirs), (ours, after_ours) = _build_both(7, build_and_reset)
    assert _state(ours) == _state(theirs) and after_ours == after_theirs


def test_every_shared_module_with_a_reset_has_one():
    """torch's public reset methods exist on minilora's module of the same name."""
    missing = [(n, m) for n in dir(mnn) if isinstance(getattr(mnn, n), type) and hasattr(torch.nn, n)
               for m in ("reset_parameters", "_reset_parameters", "reset_running_stats")
               if hasattr(getattr(torch.nn, n), m) and not hasattr(getattr(mnn, n), m)]
    assert missing == []


# ---- 2. nn.init -------------------------------------------------------------------------------------
INITS = [
    ("uniform_", (), {"a": -0.5, "b": 2.0}), ("normal_", (), {"mean": 1.0, "std": 0.3}),
    ("trunc_normal_", (), {}), ("trunc_normal_", (), {"std": 0.02}),
    ("trunc_normal_", (), {"mean": 0.0, "std": 1.0, "a": 2.0, "b": 3.0}),  # a tail: the uniform regime
    ("kaiming_uniform_", (), {"a": math.sqrt(5)}), ("kaiming_uniform_", (), {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_normal_", (), {}), ("kaiming_normal_", (), {"a": 0.2, "mode": "FAN_OUT"}),
    ("xavier_uniform_", (), {}), ("xavier_uniform_", (), {"gain": 2.0}), ("xavier_normal_", (), {"gain": 0.5}),
    ("sparse_", (0.3,), {}), ("sparse_", (0.5,), {"std": 0.1}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 5), (20, 30), (4, 3, 2)])
@pytest.mark.parametrize("name,args,kwargs", INITS, ids=[f"{c[0]}-{i}" for i, c in enumerate(INITS)])
def test_init_functions_are_torchs(name, args, kwargs, shape, dtype):
    if name == "sparse_" and len(shape) != 2:
        pytest.skip("sparse_ takes 2-D tensors")
    for seed in SEEDS:
        for own_generator in (False, True):
            def draw(lib):
                tensor = lib.empty(shape, dtype=getattr(lib, dtype))
                options = dict(kwargs, generator=lib.Generator().manual_seed(seed + 1)) if own_generator else kwargs
                getattr(lib.nn.init, name)(tensor, *args, **options)
                return tensor
            (theirs, after_theirs), (ours, after_ours) = _build_both(seed, draw)
            assert _values(ours) == _values(theirs), (seed, own_generator)
            assert after_ours == after_theirs


@pytest.mark.parametrize("shape", [(3, 5), (7, 4), (4, 3, 2)])
def test_orthogonal_draws_torchs_gaussian(shape):
    """The same normals, then a QR (LAPACK's rounding: close, not equal), signs fixed by R's diagonal."""
    for gain in (1, 1.5):
        (theirs, after_theirs), (ours, after_ours) = _build_both(
            3, lambda lib: lib.nn.init.orthogonal_(lib.empty(shape), gain=gain))
        np.testing.assert_allclose(ours.tolist(), theirs.tolist(), rtol=1e-5, atol=1e-6)
        assert after_ours == after_theirs


def test_kaiming_mode_error_is_torchs():
    for lib in (torch, minilora):
        with pytest.raises(ValueError, match=r"Mode fan_both not supported, please use one of \['fan_in', 'fan_out'\]"):
            lib.nn.init.kaiming_uniform_(lib.empty(3, 4), mode="fan_both")


def test_eye_dirac_constant_are_torchs():
    for name, shape, args in (("eye_", (3, 5), ()), ("dirac_", (4, 2, 3), ()), ("dirac_", (4, 2, 3, 3), (2,)),
                              ("constant_", (2, 3), (0.25,)), ("ones_", (3,), ()), ("zeros_", (3,), ())):
        (theirs, _), (ours, _) = _build_both(0, lambda lib: getattr(lib.nn.init, name)(lib.empty(shape), *args))
        assert _values(ours) == _values(theirs), name


# ---- 3. transformers' Llama and PEFT's adapters -------------------------------------------------------
LLAMA = dict(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")
    return transformers


def _llama(lib, hf, **options):
    if lib is torch:
        return hf.LlamaForCausalLM(hf.LlamaConfig(**LLAMA, **options))
    from minilora.models import LlamaConfig, LlamaForCausalLM
    return LlamaForCausalLM(LlamaConfig(**LLAMA, **options))


@pytest.mark.parametrize("options", [{}, {"tie_word_embeddings": True}, {"pad_token_id": 3}])
def test_llama_init_is_transformers(hf, options):
    """transformers' order: the body's layers drawn and initialised at the end of LlamaModel.__init__,
    then lm_head built and drawn; N(0, initializer_range) everywhere, norms at one."""
    for seed in SEEDS:
        (theirs, after_theirs), (ours, after_ours) = _build_both(seed, lambda lib: _llama(lib, hf, **options))
        assert _state(ours) == _state(theirs)
        assert after_ours == after_theirs


@pytest.mark.parametrize("tie", [False, True])
def test_resize_token_embeddings_without_mean_resizing_is_transformers(hf, tie):
    """mean_resizing=False: the new tables drawn as transformers draws them (a new Embedding's init,
    then N(0, initializer_range) over it, then the old rows copied; a tied head draws nothing), grown
    or shrunk. (mean_resizing=True, transformers' sample around the old rows' mean: compared in
    tests/test_transformers_r8.py.)"""
    for n in (50, 30):
        def resized(lib):
            model = _llama(lib, hf, tie_word_embeddings=tie, pad_token_id=3)
            model.resize_token_embeddings(n, mean_resizing=False)
            return model
        (theirs, after_theirs), (ours, after_ours) = _build_both(0, resized)
        assert _state(ours) == _state(theirs) and after_ours == after_theirs


@pytest.fixture(scope="module")
def peft():
    return pytest.importorskip("peft")


def _nets():
    """The same small model on both sides (torch's weights copied): emb, lin1, conv, lin2."""
    def build(lib):
        net = lib.nn.Module()
        net.emb, net.lin1 = lib.nn.Embedding(20, 8), lib.nn.Linear(8, 12)
        net.conv, net.lin2 = lib.nn.Conv1d(12, 6, 3, padding=1), lib.nn.Linear(6, 5)
        return net
    torch.manual_seed(100)
    theirs, ours = build(torch), build(minilora)
    ours.load_state_dict({k: minilora.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    return theirs, ours


LORA_CONFIGS = [
    {}, {"init_lora_weights": "gaussian"}, {"init_lora_weights": False}, {"lora_bias": True},
    {"use_rslora": True, "r": 4, "lora_alpha": 8, "lora_dropout": 0.1}, {"use_dora": True},
    {"target_modules": ["emb"]}, {"target_modules": ["emb"], "init_lora_weights": False},
    {"target_modules": ["conv"]}, {"target_modules": ["conv"], "init_lora_weights": "gaussian"},
    {"target_modules": ["lin1", "emb", "conv", "lin2"], "r": 2}, {"init_lora_weights": "orthogonal"},
    {"init_lora_weights": "olora", "r": 4},
]  # (pissa_niter_K's seeded start: test_lora_composition.py, both sides seeded)
_NOT_BITWISE = ("olora", "orthogonal")  # QR / matmul rounding


@pytest.mark.parametrize("options", LORA_CONFIGS, ids=[str(i) for i in range(len(LORA_CONFIGS))])
def test_lora_init_is_pefts(peft, options):
    """get_peft_model then add_adapter: PEFT's draws (A's Linear init, then reset_lora_parameters'
    kaiming_uniform_ again; embedding: randn A and B, B drawn again), in PEFT's layer order."""
    from minilora import lora
    options = dict({"target_modules": ["lin1", "lin2"]}, **options)
    results = []
    for lib, module, net in ((torch, peft, _nets()[0]), (minilora, lora, _nets()[1])):
        lib.manual_seed(0)
        model = module.get_peft_model(net, module.LoraConfig(**options))
        model.add_adapter("second", module.LoraConfig(**options))
        results.append((model, lib.rand(3).tolist()))
    (theirs, after_theirs), (ours, after_ours) = results
    assert after_ours == after_theirs
    want, got = _state(theirs), _state(ours)
    assert set(got) == set(want)
    for key in want:
        if str(options.get("init_lora_weights")) in _NOT_BITWISE or "magnitude" in key:
            np.testing.assert_allclose(got[key][2], want[key][2], rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            assert got[key] == want[key], key


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
def test_lora_init_on_a_cast_llama_is_pefts(hf, peft, dtype):
    """PEFT builds the adapters in the default dtype (float32 draws), moves them to the base's dtype,
    then (16-bit bases) autocasts them to float32: the same values and dtypes."""
    from minilora import lora
    results = []
    for lib, module in ((torch, peft), (minilora, lora)):
        lib.manual_seed(0)
        model = _llama(lib, hf).to(getattr(lib, dtype))
        model = module.get_peft_model(model, module.LoraConfig(target_modules=["embed_tokens", "q_proj", "v_proj"]))
        results.append((model, lib.rand(3).tolist()))
    (theirs, after_theirs), (ours, after_ours) = results
    assert _state(ours) == _state(theirs) and after_ours == after_theirs


@pytest.mark.parametrize("options", [{}, {"init_lora_weights": False}])
def test_lora_on_multihead_attention_is_pefts(peft, options):
    """PEFT wraps out_proj first (its adapter drawn), then draws in_proj's pair, then makes out_proj's
    adapter again (drawn a second time)."""
    from minilora import lora
    torch.manual_seed(1)
    theirs = torch.nn.Module()
    theirs.mha, theirs.lin = torch.nn.MultiheadAttention(8, 2), torch.nn.Linear(8, 4)
    ours = minilora.nn.Module()
    ours.mha, ours.lin = minilora.nn.MultiheadAttention(8, 2), minilora.nn.Linear(8, 4)
    ours.load_state_dict({k: minilora.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    results = []
    for lib, module, net in ((torch, peft, theirs), (minilora, lora, ours)):
        lib.manual_seed(0)
        model = module.get_peft_model(net, module.LoraConfig(target_modules=["mha", "lin"], **options))
        results.append((model, lib.rand(3).tolist()))
    (theirs, after_theirs), (ours, after_ours) = results
    assert _state(ours) == _state(theirs) and after_ours == after_theirs


@pytest.mark.parametrize("kind,options", [
    ("AdaLoraConfig", dict(init_r=6, target_r=2, total_step=10)),
    ("AdaLoraConfig", dict(init_r=6, target_r=2, total_step=10, init_lora_weights=False)),
    ("VeraConfig", dict(r=4)), ("VeraConfig", dict(r=4, init_weights=False, projection_prng_key=7)),
])
def test_adalora_and_vera_inits_are_pefts(peft, kind, options):
    """AdaLoRA: randn A, E, B and ranknum, then N(0, 0.02) for A and B; VeRA: its shared projections from
    a generator of its own seeded with projection_prng_key (the global stream untouched), lambda_d randn."""
    from minilora import lora
    results = []
    for lib, module, net in ((torch, peft, _nets()[0]), (minilora, lora, _nets()[1])):
        lib.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = module.get_peft_model(net, getattr(module, kind)(target_modules=["lin1", "lin2"], **options))
        results.append((model, lib.rand(3).tolist()))
    (theirs, after_theirs), (ours, after_ours) = results
    assert _state(ours) == _state(theirs) and after_ours == after_theirs


def test_seeded_peft_tutorial_trains_as_peft(hf, peft):
    """The tutorial: seed, build the model, get_peft_model with lora_dropout, 3 AdamW steps. The same
    weights, dropout masks and order of draws: PEFT's losses (float32 sums aside), and the generator ends
    where torch's does."""
    from minilora import lora
    config = dict(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj", "down_proj"])

    def tutorial(lib, module):
        lib.manual_seed(42)
        model = module.get_peft_model(_llama(lib, hf), module.LoraConfig(**config))
        optimizer = lib.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        ids = lib.randint(0, LLAMA["vocab_size"], (2, 10))
        model.train()
        losses = []
        for _ in range(3):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        return losses, lib.rand(3).tolist()

    (want, after_theirs), (got, after_ours) = tutorial(torch, peft), tutorial(minilora, lora)
    assert got[0] == want[0]  # B = 0: the first loss is the base model's, bit for bit
    np.testing.assert_allclose(got, want, rtol=2e-6)
    assert abs(got[2] - want[2]) < 1e-3 * abs(want[1] - want[2])  # dropout differences would show here
    assert after_ours == after_theirs


# ---- 4. torch.utils.data --------------------------------------------------------------------------------
def _data_run(lib, data):
    """Loaders, samplers and splits one after another on the global generator (and generators of their
    own), as a script would use them; everything they yield, and the next global draw."""
    def own(seed):
        return lib.Generator().manual_seed(seed)
    dataset, out = list(range(10)), []
    for _ in range(2):  # two epochs: each iter() draws the loader's base seed and the sampler's seed
        out.append([b.tolist() for b in data.DataLoader(dataset, batch_size=3, shuffle=True)])
    out.append([b.tolist() for b in data.DataLoader(dataset, batch_size=4, shuffle=True, generator=own(5))])
    out.append([b.tolist() for b in data.DataLoader(dataset, batch_size=4)])  # unshuffled: a base seed still
    out.append(list(data.RandomSampler(dataset, replacement=True, num_samples=40)))
    out.append(list(data.RandomSampler(dataset, num_samples=23)))
    out.append(list(data.RandomSampler(dataset, generator=own(3))))
    out.append(list(data.SubsetRandomSampler([3, 5, 7, 9])))
    out.append(list(data.WeightedRandomSampler([0.1, 0.5, 2.0, 1.0], 12)))
    out.append(list(data.WeightedRandomSampler([0.1, 0.5, 2.0, 1.0], 3, replacement=False)))
    out.append([list(s) for s in data.random_split(dataset, [3, 7])])
    out.append([list(s) for s in data.random_split(dataset, [0.3, 0.3, 0.4], generator=own(9))])
    out.append(list(data.BatchSampler(data.RandomSampler(dataset), 4, drop_last=True)))
    out.append(lib.rand(3).tolist())
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_data_orders_and_samples_are_torchs(seed):
    torch.manual_seed(seed)
    want = _data_run(torch, tdata)
    minilora.manual_seed(seed)
    assert _data_run(minilora, mdata) == want


def test_a_loop_over_a_loader_leaves_torchs_stream():
    for lib, data in ((torch, tdata), (minilora, mdata)):
        lib.manual_seed(0)
        for _ in data.DataLoader(list(range(5)), batch_size=2, shuffle=True):
            pass
        for _ in data.DataLoader(data.TensorDataset(lib.arange(4)), batch_size=2):
            pass
        if lib is torch:
            want = torch.randn(20).tolist()
        else:
            assert minilora.randn(20).tolist() == want


# ---- 5. generate(do_sample=True) -------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"temperature": 0.7}, {"top_k": 5}, {"top_p": 0.8},
                                     {"top_k": 10, "top_p": 0.9, "temperature": 1.3}, {"num_return_sequences": 2}])
def test_sampling_is_transformers(hf, options):
    """transformers samples with torch.multinomial(probs, 1): the same tokens for the same seed."""
    from minilora.models import LlamaConfig, LlamaForCausalLM
    special = dict(pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    theirs = hf.LlamaForCausalLM(hf.LlamaConfig(**LLAMA, **special)).eval()
    ours = LlamaForCausalLM(LlamaConfig(**LLAMA, **special))
    ours.load_state_dict({k: minilora.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    ours.eval()
    ids = [[2, 5, 7, 9], [2, 11, 3, 4]]
    for seed in SEEDS:
        torch.manual_seed(seed)
        want = theirs.generate(torch.tensor(ids), attention_mask=torch.ones(2, 4, dtype=torch.long), do_sample=True,
                               max_new_tokens=8, **options).tolist()
        minilora.manual_seed(seed)
        got = ours.generate(minilora.tensor(ids), attention_mask=minilora.ones(2, 4, dtype=minilora.long),
                            do_sample=True, max_new_tokens=8, **options).tolist()
        assert got == want
        assert minilora.rand(3).tolist() == torch.rand(3).tolist()


# ---- skip_init: a module built without its init draws nothing -------------------------------------------
SKIPPED = [("Linear", (5, 3), {}), ("Conv2d", (2, 6, 3), {"groups": 2}), ("Embedding", (10, 4), {}),
           ("MultiheadAttention", (8, 2), {}), ("LSTMCell", (3, 4), {}), ("LayerNorm", (6,), {})]
# (torch's LSTM/GRU/RNN take device= through **kwargs, so torch's skip_init refuses them; minilora's name it
# in their signatures and are built: more than torch allows, never another number)


@pytest.mark.parametrize("name, args, kwargs", SKIPPED)
def test_skip_init_draws_nothing_as_torchs(name, args, kwargs):
    """``torch.nn.utils.skip_init(cls, ...)``: the module's parameters with their shapes and dtypes, and
    the global generator where it was (torch builds on 'meta'; minilora's initialisers stand still)."""
    built = _build_both(3, lambda lib: lib.nn.utils.skip_init(getattr(lib.nn, name), *args, **kwargs))
    (theirs, their_next), (ours, our_next) = built
    assert our_next == their_next
    assert {k: (_values(v)[:2], v.requires_grad) for k, v in ours.named_parameters()} == \
        {k: (_values(v)[:2], v.requires_grad) for k, v in theirs.named_parameters()}
    assert type(ours) is getattr(mnn, name) and ours.training


def test_skip_init_of_a_llama_leaves_the_stream_and_later_inits_draw_again(hf):
    from minilora.models import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
    minilora.manual_seed(5)
    model = mnn.utils.skip_init(LlamaForCausalLM, config, dtype="float32")
    assert minilora.rand(2).tolist() == (minilora.manual_seed(5), minilora.rand(2).tolist())[1]
    assert model.lm_head.weight.shape == (64, 32)
    minilora.manual_seed(5)  # the initialisers are on again after the call: a plain build draws as before
    drawn = mnn.Linear(3, 2).weight.tolist()
    torch.manual_seed(5)
    assert drawn == torch.nn.Linear(3, 2).weight.tolist()


def test_skip_init_refuses_a_module_without_device_as_torch():
    for lib in (torch, minilora):
        with pytest.raises(RuntimeError, match="Module must support a 'device' arg to skip initialization"):
            lib.nn.utils.skip_init(lib.nn.ReLU)
    with pytest.raises(TypeError):  # a constructor's own error, and the initialisers are back on after it
        mnn.utils.skip_init(mnn.Linear, 3)
    minilora.manual_seed(0)
    torch.manual_seed(0)
    assert mnn.Linear(2, 2).weight.tolist() == torch.nn.Linear(2, 2).weight.tolist()


def test_skip_init_in_one_thread_leaves_another_threads_init_alone():
    """skip_init's switch is per thread (torch's meta device is per call): a Linear built in another
    thread while a constructor runs under skip_init draws its init."""
    import threading
    built = {}

    class Slow(mnn.Module):
        def __init__(self, device=None):
            super().__init__()
            worker = threading.Thread(target=lambda: built.setdefault("other", mnn.Linear(4, 4)))
            worker.start()
            worker.join()
            self.layer = mnn.Linear(4, 4)
    mnn.utils.skip_init(Slow)
    assert np.abs(np.asarray(built["other"].weight.tolist())).sum() > 0
