"""torch's MKL math functions from MKL itself (``minilora/mkl_vml.py``), and what they complete: a Llama's logits.

torch computes exp, log, sin, cos, tan, asin, acos, atan, tanh, log2, log10, erf, erfc and erfinv of float32 and
float64 tensors with MKL's VML, which is not correctly rounded; minilora's correctly rounded values differed from
torch's in up to 5% (float32 sin) and 21% (float64 tanh) of elements. With ``minilora[mkl]`` (MKL 2024.2, torch
2.13's) installed, minilora calls those same functions. Together with MKL's products (``blas``), RoPE's cos/sin
tables and transformers' eager attention op by op, a float32 Llama with LoRA adapters now gives transformers +
PEFT's logits bit for bit, in a forward and in ``generate``'s scores (before: 84-99% of logits an ulp or more off).
"""
import numpy as np
import pytest

import minilora as ml
from minilora import mkl_vml

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not mkl_vml.applies("sin", np.zeros(1, np.float32)),
                                reason="MKL (minilora[mkl]) is not minilora's BLAS here")

FUNCTIONS = ["exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "tanh", "log2", "log10", "erf", "erfc",
             "erfinv"]


def _inputs(dtype, seed=0):
    """Random bit patterns (every exponent, NaNs, infinities, subnormals) and a normal spread, one array."""
    rng = np.random.default_rng(seed)
    width = np.uint32 if dtype == np.float32 else np.uint64
    bits = rng.integers(0, np.iinfo(width).max, 1 << 14, dtype=width, endpoint=True).view(dtype)
    return np.concatenate([bits, (rng.standard_normal(1 << 14) * 3).astype(dtype), np.tanh(rng.standard_normal(1 << 12)).astype(dtype)])


def _same(a, b):
    return np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_vml_functions_are_torchs(name, dtype):
    x = _inputs(dtype, seed=len(name))
    with np.errstate(all="ignore"):
        expected = getattr(torch, name)(torch.from_numpy(x)).numpy()
        assert _same(getattr(ml, name)(ml.tensor(x)).numpy(), expected)
        strided = x[::3]  # (torch gives a strided input the same values)
        assert _same(getattr(ml.tensor(x), name)()[::3].numpy(), getattr(torch, name)(torch.from_numpy(strided)).numpy())
        assert _same(getattr(ml, name)(ml.tensor(x)[::3]).numpy(), getattr(torch, name)(torch.from_numpy(x)[::3]).numpy())


@pytest.mark.parametrize("name", ["sin", "cos", "tanh", "erf"])
def test_gradients_through_vml_are_torchs(name):
    x = np.random.default_rng(1).standard_normal(4096).astype(np.float32) * 3
    ours = ml.tensor(x, requires_grad=True)
    getattr(ml, name)(ours).sum().backward()
    theirs = torch.tensor(x, requires_grad=True)
    getattr(torch, name)(theirs).sum().backward()
    assert _same(ours.grad.numpy(), theirs.grad.numpy())


def _llama_pair(attention="eager"):
    """transformers' float32 Llama and minilora's with its weights, both with ``attention`` ("eager" or "sdpa")."""
    transformers = pytest.importorskip("transformers")
    from test_llama import hf_model  # (transformers' Llama with random weights: the tests' reference)
    from minilora.models import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=300, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    reference = hf_model(transformers, config, dtype="float32", seed=0)  # (attn_implementation "eager")
    reference.config._attn_implementation = attention
    model = LlamaForCausalLM(config, dtype="float32")
    model.config._attn_implementation = attention
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    return reference, model


def assert_same_greedy_scores(theirs, ours, new_tokens=5):
    """Greedy ``generate`` from one prompt: the same tokens, every step's scores transformers' bit for bit."""
    prompt = np.random.default_rng(1).integers(0, 300, (1, 8))
    with torch.no_grad():
        expected = theirs.generate(input_ids=torch.as_tensor(prompt), max_new_tokens=new_tokens, do_sample=False,
                                   output_scores=True, return_dict_in_generate=True)
    got = ours.generate(input_ids=ml.tensor(prompt), max_new_tokens=new_tokens, do_sample=False, output_scores=True,
                        return_dict_in_generate=True)
    assert np.array_equal(np.asarray(got.sequences.numpy()), expected.sequences.numpy())
    for step, (a, b) in enumerate(zip(got.scores, expected.scores)):
        assert np.array_equal(np.asarray(a.numpy()), b.numpy()), step


@pytest.fixture
def one_thread():
    """torch runs on one thread here (conftest); MKL's one-row products split on two from 16384 products."""
    before = ml.parallel.num_threads()
    ml.parallel.set_num_threads(1)
    yield
    ml.parallel.set_num_threads(before)


def test_llama_logits_are_transformers_bit_for_bit(one_thread):
    reference, model = _llama_pair()
    ids = np.random.default_rng(0).integers(0, 300, (2, 40))
    with torch.no_grad():
        expected = reference(input_ids=torch.as_tensor(ids)).logits.numpy()
    with ml.no_grad():
        assert np.array_equal(model(ml.tensor(ids)).logits.numpy(), expected)


def test_lora_generate_scores_are_pefts_bit_for_bit(one_thread):
    """Prefill, then one token at a time over the cache: generate passes logits_to_keep=1 as transformers' does
    (the head on the last position: a one-row product), and every step's scores are PEFT's."""
    peft = pytest.importorskip("peft")
    reference, model = _llama_pair()
    options = dict(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**options)).eval()
    ours = ml.lora.get_peft_model(model, ml.lora.LoraConfig(**options)).eval()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert_same_greedy_scores(theirs, ours)

