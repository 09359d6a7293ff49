"""PEFT 0.21 and transformers 5.25 side by side with minilora, round 3: code written the way their docs
write it (positional and keyword), run on a tiny random Llama in both, numbers, strings and errors compared.

* generate() answers on input_ids' device (transformers'), also on the cuda stand-in;
* AdaLoRA's ranknum upcast with the adapter (PEFT's dtype) and its scale computed in PEFT's order;
* PiSSA / OLoRA on 16-bit bases factorised in float32 as PEFT: A, B, the residual W0.

Skipped when torch / transformers / peft are not installed."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import fake_cupy  # noqa: E402
import minilora as ml  # noqa: E402
from minilora.lora import AdaLoraConfig, LoraConfig, get_peft_model  # noqa: E402
from minilora.models import LlamaConfig, LlamaForCausalLM  # noqa: E402

from test_llama import hf_model  # noqa: E402
from peft_versions import peft_words_as_022  # noqa: E402

TINY = LlamaConfig(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
IDS = np.random.default_rng(0).integers(0, TINY.vocab_size, (2, 6))


def pair(dtype="float32", config=TINY, seed=0):
    """transformers' stock Llama and a minilora Llama holding the same random weights, in ``dtype``."""
    reference = hf_model(transformers, config, dtype=dtype, seed=seed)
    model = LlamaForCausalLM(config, dtype=dtype)
    model.load_state_dict({k: v.float().numpy(force=True) for k, v in reference.state_dict().items()})
    return reference, model


def as_numpy(value):
    """A torch or minilora tensor's values as float32/float64 NumPy (16-bit ones widened exactly)."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return (value.float() if value.dtype in (torch.float16, torch.bfloat16) else value).numpy(force=True)
    value = value.detach()
    return (value.float() if value.dtype.itemsize == 2 and value.is_floating_point() else value).numpy(force=True)


def layer(model, name="q_proj", index=0):
    return getattr(model.base_model.model.model.layers[index].self_attn, name)


# ==================================================================================================
# generate(): the answer on the prompt's device
# ==================================================================================================
def test_generate_returns_ids_on_the_input_device_on_cuda(monkeypatch):
    fake_cupy.install(monkeypatch)
    monkeypatch.setattr(ml.device("cuda"), "uses_kernels", False)  # the stand-in launches no kernels
    ml.manual_seed(0)
    model = LlamaForCausalLM(TINY, device="cuda")
    prompt = ml.tensor([[3, 1, 4, 1]], device="cuda")
    out = model.generate(prompt, max_new_tokens=3, attention_mask=ml.ones(1, 4, dtype=ml.int64, device="cuda"))
    assert out.device.type == "cuda" and out.dtype == ml.int64
    cpu_model = LlamaForCausalLM(TINY)
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    expected = cpu_model.generate(prompt.cpu(), max_new_tokens=3)
    assert expected.device.type == "cpu"
    np.testing.assert_array_equal(out.cpu().numpy(force=True), expected.numpy(force=True))
    # the answer feeds straight back in, as in a chat loop (it used to come back on the host)
    again = model.generate(out, max_new_tokens=1)
    assert again.device.type == "cuda" and again.shape == (1, 8)


# ==================================================================================================
# AdaLoRA on 16-bit bases: ranknum is an adapter entry, upcast as PEFT upcasts it
# ==================================================================================================
ADALORA = dict(init_r=4, target_r=2, lora_alpha=8, target_modules=["q_proj", "v_proj"], total_step=8,
               init_lora_weights=False)


def adalora_pair(dtype, autocast):
    reference, model = pair(dtype)
    theirs = peft.get_peft_model(reference, peft.AdaLoraConfig(**ADALORA), autocast_adapter_dtype=autocast)
    ours = get_peft_model(model, AdaLoraConfig(**ADALORA), autocast_adapter_dtype=autocast)
    ours.load_state_dict({k: as_numpy(v) for k, v in theirs.state_dict().items()}, strict=False)
    return theirs, ours


def float32_envelope(peft_layer, x):
    """How far two float32 evaluations of AdaLoRA's ``x W^T + (x (A E)^T) B^T s / ranknum`` that sum
    each product in another order can be apart: each order errs by at most (k + r + 2) u |terms| (u =
    2^-24, k inputs, r ranks, the scale's two roundings), twice that for two orders. The order is
    the BLAS's: torch's MKL on an AVX-512 EPYC sums a 16-long dot product of a 4- or 8-column GEMM
    in another order than on earlier CPUs and than NumPy's OpenBLAS (up to 1 ulp apart in 65% of
    elements here); the 16-bit dtypes round each result to 8 or 11 bits and stay bit for bit."""
    W, A, B, E = (np.abs(as_numpy(p)).astype(np.float64) for p in (
        peft_layer.base_layer.weight, peft_layer.lora_A["default"], peft_layer.lora_B["default"],
        peft_layer.lora_E["default"]))
    scale = abs(peft_layer.scaling["default"] / (float(peft_layer.ranknum["default"]) + 1e-5))
    terms = np.abs(as_numpy(x)).astype(np.float64) @ (W.T + (A * E).T @ B.T * scale)
    return 2 * (W.shape[1] + A.shape[0] + 2) * 2.0 ** -24 * terms


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("autocast", [True, False], ids=["autocast", "no-autocast"])
def test_adalora_ranknum_dtype_layer_output_and_delta_as_peft(dtype, autocast):
    theirs, ours = adalora_pair(dtype, autocast)
    assert str(layer(ours).ranknum["default"].dtype) == str(layer(theirs).ranknum["default"].dtype).split(".")[-1]
    x = torch.randn(64, TINY.hidden_size, generator=torch.Generator().manual_seed(1)).to(getattr(torch, dtype))
    with torch.no_grad():
        expected, expected_delta = layer(theirs)(x), layer(theirs).get_delta_weight("default")
    got = layer(ours)(ml.tensor(x.float().numpy(force=True)).to(getattr(ml, dtype)))
    if dtype == "float32":  # float32 GEMMs sum in the BLAS's own order: within two summations' error
        np.testing.assert_array_less(np.abs(as_numpy(got) - as_numpy(expected)), float32_envelope(layer(theirs), x))
    else:
        np.testing.assert_array_equal(as_numpy(got), as_numpy(expected))
    delta = layer(ours).get_delta_weight("default")
    assert str(delta.dtype) == str(expected_delta.dtype).split(".")[-1]
    if dtype == "float32":  # (NumPy's and torch's float32 matmuls may sum in another order)
        np.testing.assert_allclose(np.asarray(delta), as_numpy(expected_delta), rtol=1e-6, atol=1e-7)
    else:  # the same ops rounded the same way: bit for bit
        np.testing.assert_array_equal(np.asarray(delta, dtype=np.float32), as_numpy(expected_delta))


# ==================================================================================================
# PiSSA / OLoRA on 16-bit bases: float32 factorisation as PEFT, the residual rounded once
# ==================================================================================================
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_on_a_16_bit_base_give_peft_factors_and_residual(dtype, init):
    """Both factorise the float32 copy of W0 (float32 A and B, as PEFT) and round W0 - (s B) A once to the
    base dtype. Two LAPACKs (torch's and NumPy's) may pick opposite signs for a singular vector, which
    B A does not see: A and B are compared up to the sign of each rank-1 pair, the residual base and
    B A directly. The LAPACKs' float32 results differ in their last bits (by ~1e-6: which LAPACK, and
    which of its kernels, depends on the library and the CPU: MKL's SVD on an AVX-512 EPYC gives other
    last bits than on the earlier machines' CPUs), and A and B carry the base's 16-bit rounding (built
    in the base dtype, then upcast to float32 as PEFT's autocast_adapter_dtype): so an element of A, B
    or the residual may land one 16-bit step apart, and B A by the steps that carries through
    (|B| step(A) + step(B) |A|); 2e-5 covers the float32 last bits."""
    config = LlamaConfig.from_dict({**TINY.to_dict(), "hidden_size": 32, "num_hidden_layers": 1})
    reference, model = pair(dtype, config)
    step = lambda v: np.spacing(np.abs(v).astype(dtype)).astype(np.float32)  # one 16-bit step at each value
    options = dict(r=4, lora_alpha=8, init_lora_weights=init, target_modules=["q_proj", "v_proj"])
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**options))
    ours = get_peft_model(model, LoraConfig(**options))
    for name in ("q_proj", "v_proj"):
        mine, peft_layer = layer(ours, name), layer(theirs, name)
        A, B = (as_numpy(t["default"].weight) for t in (mine.lora_A, mine.lora_B))
        A_ref, B_ref = (as_numpy(t["default"].weight) for t in (peft_layer.lora_A, peft_layer.lora_B))
        assert A.dtype == B.dtype == A_ref.dtype == np.float32
        signs = np.sign(np.sum(A * A_ref, axis=1))  # +1 or -1 per rank-1 pair
        np.testing.assert_array_less(np.abs(A * signs[:, None] - A_ref), np.maximum(2e-5, step(A_ref)) * 1.0001)
        np.testing.assert_array_less(np.abs(B * signs[None, :] - B_ref), np.maximum(2e-5, step(B_ref)) * 1.0001)
        carried = np.abs(B_ref) @ step(A_ref) + step(B_ref) @ np.abs(A_ref)
        np.testing.assert_array_less(np.abs(B @ A - B_ref @ A_ref), 2e-5 + carried)
        W, W_ref = as_numpy(mine.base_layer.weight), as_numpy(peft_layer.base_layer.weight)
        assert str(mine.base_layer.weight.dtype) == dtype
        assert np.all(np.abs(W - W_ref) <= step(W_ref)) and np.mean(W != W_ref) < 0.02


# ==================================================================================================
# generate() against transformers' generate() (float32 models; greedy ids exactly, scores closely)
# ==================================================================================================
@pytest.fixture(scope="module")
def generation_pair():
    reference, model = pair("float32", seed=3)
    return reference.eval(), model.eval()


PROMPT = [[5, 7, 9, 11]]
LEFT_PADDED = ([[0, 0, 5, 7], [3, 4, 5, 6]], [[0, 0, 1, 1], [1, 1, 1, 1]])


def hf_generate(reference, ids, mask=None, **options):
    out = reference.generate(torch.as_tensor(ids), attention_mask=None if mask is None else torch.as_tensor(mask),
                             **options)
    return out.numpy(force=True) if isinstance(out, torch.Tensor) else out


def our_generate(model, ids, mask=None, **options):
    out = model.generate(ml.tensor(ids), attention_mask=None if mask is None else ml.tensor(mask), **options)
    return out.numpy(force=True) if isinstance(out, ml.Tensor) else out


def test_min_new_tokens_and_min_length_hold_eos_back_as_transformers(generation_pair):
    reference, model = generation_pair
    free = hf_generate(reference, PROMPT, max_new_tokens=8, eos_token_id=[], pad_token_id=0)
    eos = int(free[0, 5])  # the second new token: without a minimum, generation stops there
    for options in (dict(), dict(min_new_tokens=5), dict(min_length=9), dict(min_new_tokens=0),
                    dict(eos_token_id=[eos, 36], min_new_tokens=3)):
        options = dict(dict(max_new_tokens=8, eos_token_id=eos, pad_token_id=0), **options)
        expected = hf_generate(reference, PROMPT, **options)
        np.testing.assert_array_equal(our_generate(model, PROMPT, **options), expected, err_msg=str(options))
    assert our_generate(model, PROMPT, max_new_tokens=8, eos_token_id=eos).shape == (1, 6)
    assert our_generate(model, PROMPT, max_new_tokens=8, eos_token_id=eos, min_new_tokens=5).shape[1] > 6


def test_repetition_penalty_skips_the_left_padding_as_transformers(generation_pair):
    """transformers' RepetitionPenaltyLogitsProcessor ignores each row's left padding (prompt_ignore_length
    from the attention_mask): the pad id is not penalised for appearing in the padding."""
    reference, model = generation_pair
    ids, mask = LEFT_PADDED
    pad = int(hf_generate(reference, ids[1:], max_new_tokens=1)[0, -1])  # a token the model wants next
    ids = [[pad, pad, 5, 7], [3, 4, 5, 6]]
    for penalty in (1.5, 5.0):
        options = dict(max_new_tokens=5, pad_token_id=pad, repetition_penalty=penalty, eos_token_id=[])
        expected = hf_generate(reference, ids, mask, **options)
        np.testing.assert_array_equal(our_generate(model, ids, mask, **options), expected)


def test_return_dict_in_generate_scores_and_logits_as_transformers(generation_pair):
    reference, model = generation_pair
    ids, mask = LEFT_PADDED
    for options in (dict(repetition_penalty=1.3), dict(do_sample=True, temperature=0.7, top_k=5, top_p=0.8)):
        options = dict(max_new_tokens=3, pad_token_id=0, eos_token_id=[], return_dict_in_generate=True,
                       output_scores=True, output_logits=True, **options)
        torch.manual_seed(0)
        theirs = reference.generate(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), **options)
        ours = model.generate(ml.tensor(ids), attention_mask=ml.tensor(mask), **options)
        assert type(ours).__name__ == type(theirs).__name__ == "GenerateDecoderOnlyOutput"
        assert len(ours.scores) == len(ours.logits) == 3 and ours.scores[0].dtype == ml.float32
        assert ours[0] is ours.sequences and ours["scores"] is ours.scores
        steps = len(ours.scores) if not options.get("do_sample") else 1  # sampled steps differ after the first
        if not options.get("do_sample"):
            np.testing.assert_array_equal(ours.sequences.numpy(force=True), theirs.sequences.numpy(force=True))
        for step in range(steps):
            for mine, reference_scores in ((ours.scores[step], theirs.scores[step]),
                                           (ours.logits[step], theirs.logits[step])):
                mine, reference_scores = mine.numpy(force=True), reference_scores.numpy(force=True)
                np.testing.assert_array_equal(np.isinf(mine), np.isinf(reference_scores))
                finite = np.isfinite(reference_scores)
                np.testing.assert_allclose(mine[finite], reference_scores[finite], rtol=1e-4, atol=1e-5)
    plain = model.generate(ml.tensor(ids), attention_mask=ml.tensor(mask), max_new_tokens=2,
                           return_dict_in_generate=True)
    theirs = reference.generate(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), max_new_tokens=2,
                                return_dict_in_generate=True)
    assert plain.scores is None and plain.logits is None and plain.keys() == list(theirs.keys())  # ..., "cache"


def test_generation_config_argument_and_other_transformers_options(generation_pair):
    reference, model = generation_pair
    from minilora.generate import GenerationConfig
    config = dict(max_new_tokens=3, eos_token_id=[], pad_token_id=0)
    expected = hf_generate(reference, PROMPT, generation_config=transformers.GenerationConfig(**config))
    np.testing.assert_array_equal(our_generate(model, PROMPT, generation_config=GenerationConfig(**config)), expected)
    # transformers' options at their "off" value change nothing, in both
    off = dict(num_beams=1, no_repeat_ngram_size=0, output_attentions=False)
    np.testing.assert_array_equal(our_generate(model, PROMPT, **config, **off), expected)
    # anything else is refused, by name; a typo gets transformers' ValueError, word for word
    with pytest.raises(ValueError, match="Group Beam Search requires"):  # (beam search itself: test_serve_cli_r4)
        our_generate(model, PROMPT, max_new_tokens=3, num_beams=4, num_beam_groups=2)
    with pytest.raises(ValueError) as theirs:
        hf_generate(reference, PROMPT, max_new_tokens=3, max_new_token=5)
    with pytest.raises(ValueError) as ours:
        our_generate(model, PROMPT, max_new_tokens=3, max_new_token=5)
    assert str(ours.value) == str(theirs.value)


# ==================================================================================================
# LoraConfig: a rank_pattern / alpha_pattern key that adapts nothing is warned about, as in PEFT
# ==================================================================================================
def test_unmatched_rank_and_alpha_pattern_keys_warn_with_peft_words():
    options = dict(r=4, target_modules=["q_proj", "v_proj"], rank_pattern={"proj": 2, "q_proj": 3},
                   alpha_pattern={r"layers\.1\.self_attn\.v_proj": 5, "o_proj": 7})
    reference, model = pair()
    with pytest.warns(RuntimeWarning) as theirs:
        peft.get_peft_model(reference, peft.LoraConfig(**options))
    with pytest.warns(RuntimeWarning) as ours:
        peft_model = get_peft_model(model, LoraConfig(**options))
    expected = [peft_words_as_022(str(w.message)) for w in theirs if "did not match" in str(w.message)]
    assert len(expected) == 2 and [str(w.message) for w in ours] == expected
    assert layer(peft_model).r["default"] == 3 and layer(peft_model, "v_proj", 1).lora_alpha["default"] == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key used: no warning
        get_peft_model(pair()[1], LoraConfig(r=4, target_modules=["q_proj"], rank_pattern={"q_proj": 2}))


# ==================================================================================================
# LlamaForCausalLM.forward: transformers 5's keywords
# ==================================================================================================
def hf_out(reference, **kwargs):
    with torch.no_grad():
        return reference(**{k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()})


@pytest.mark.parametrize("dtype", [np.int32, np.float32, np.bool_])
def test_labels_of_another_dtype_than_int64_are_refused_with_torchs_words(dtype):
    reference, model = pair()
    labels = IDS.astype(dtype)
    with pytest.raises(RuntimeError) as theirs:
        hf_out(reference, input_ids=IDS, labels=labels)
    with pytest.raises(RuntimeError) as ours:
        model(IDS, labels=labels)
    with pytest.raises(RuntimeError):
        model(IDS, labels=ml.tensor(labels))
    assert str(ours.value) == str(theirs.value)
    model(IDS, labels=IDS.tolist())  # Python ints are int64, as torch.tensor makes them


def test_float_attention_mask_reads_as_mask_not_zero_as_transformers():
    reference, model = pair()
    mask = np.ones_like(IDS)
    mask[0, :2] = 0
    valid = mask == 1  # (padded query positions are undefined in transformers: eager and sdpa differ there)
    expected = hf_out(reference, input_ids=IDS, attention_mask=mask.astype(np.float32)).logits.numpy(force=True)
    got = model(IDS, attention_mask=mask.astype(np.float32)).logits.numpy(force=True)
    np.testing.assert_allclose(got[valid], expected[valid], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got, model(IDS, attention_mask=mask).logits.numpy(force=True))
    np.testing.assert_array_equal(model.generate(IDS, attention_mask=mask.astype(np.float32), max_new_tokens=2).numpy(force=True),
                                  model.generate(IDS, attention_mask=mask, max_new_tokens=2).numpy(force=True))


def test_logits_to_keep_return_dict_cache_and_num_items_in_batch_as_transformers():
    reference, model = pair()
    for keep in (1, 3, 0):
        expected = hf_out(reference, input_ids=IDS, logits_to_keep=keep).logits.numpy(force=True)
        got = model(IDS, logits_to_keep=keep).logits.numpy(force=True)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    labels = np.where(np.arange(IDS.shape[1]) < 2, -100, IDS)
    expected = hf_out(reference, input_ids=IDS, labels=labels, num_items_in_batch=torch.tensor(3)).loss.item()
    assert model(IDS, labels=labels, num_items_in_batch=3).loss.item() == pytest.approx(expected, rel=1e-5)
    ours = model(IDS, labels=labels, return_dict=False)  # (loss, logits, cache): the cache in training mode too
    theirs = hf_out(reference, input_ids=IDS, labels=labels, return_dict=False)
    assert len(ours) == len(theirs) == 3 and ours[2] is not None and theirs[2] is not None
    loss, logits = ours[:2]
    assert loss.item() == pytest.approx(theirs[0].item(), rel=1e-5) and logits.shape == tuple(theirs[1].shape)
    first = model(IDS[:, :4], use_cache=True)
    assert first.cache is first.past_key_values is not None
    step = model(IDS[:, 4:5], cache=first.cache, use_cache=True)
    full = model(IDS[:, :5]).logits.numpy(force=True)[:, -1]
    np.testing.assert_allclose(step.logits.numpy(force=True)[:, -1], full, rtol=1e-5, atol=1e-5)


def test_inputs_embeds_in_place_of_input_ids_as_transformers():
    reference, model = pair()
    embeds = model.get_input_embeddings()(ml.tensor(IDS)).detach().requires_grad_(True)
    expected = hf_out(reference, inputs_embeds=torch.as_tensor(embeds.numpy(force=True))).logits.numpy(force=True)
    out = model(inputs_embeds=embeds, labels=IDS)
    np.testing.assert_allclose(out.logits.numpy(force=True), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out.logits.numpy(force=True), model(IDS).logits.numpy(force=True))
    out.loss.backward()
    assert embeds.grad is not None and embeds.grad.shape == embeds.shape  # soft prompts can be trained
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(IDS, inputs_embeds=embeds)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()


# ==================================================================================================
# load_adapter(is_trainable=True): the loaded adapter trains at once, as in PEFT
# ==================================================================================================
def trainable_adapters(model):
    return sorted({name.split(".")[-2] for name, p in model.named_parameters() if p.requires_grad})


@pytest.mark.parametrize("start", ["get_peft_model", "from_pretrained", "from_pretrained_trainable"])
def test_load_adapter_is_trainable_and_set_requires_grad_as_peft(tmp_path, start):
    from minilora.lora import PeftModel
    options = dict(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False, modules_to_save=["lm_head"])
    peft.get_peft_model(pair()[0], peft.LoraConfig(**options)).save_pretrained(str(tmp_path))
    for is_trainable in (True, False):
        results = []
        for library, wrap, config_class, load in ((peft, peft.get_peft_model, peft.LoraConfig, peft.PeftModel),
                                                  (None, get_peft_model, LoraConfig, PeftModel)):
            reference, model = pair()
            base = reference if library is peft else model
            if start == "get_peft_model":
                wrapped = wrap(base, config_class(**options))
            else:
                wrapped = load.from_pretrained(base, str(tmp_path), is_trainable=start.endswith("trainable"))
            wrapped.load_adapter(str(tmp_path), adapter_name="other", is_trainable=is_trainable)
            seen = [trainable_adapters(wrapped), wrapped.active_adapter]
            wrapped.set_requires_grad("default", requires_grad=False)
            seen.append(trainable_adapters(wrapped))
            wrapped.set_requires_grad(["default", "other"])
            seen.append(trainable_adapters(wrapped))
            results.append(seen)
        assert results[1] == results[0], (is_trainable, results)


# ==================================================================================================
# Tied embeddings: adapting the tied matrix is warned about, as in PEFT
# ==================================================================================================
@pytest.mark.parametrize("options", [dict(target_modules=["lm_head"]), dict(target_modules=["embed_tokens"]),
                                     dict(target_modules=r".*embed_tokens"),
                                     dict(target_modules=["q_proj"], modules_to_save=["lm_head"])])
def test_adapting_a_tied_embedding_warns_as_peft(options):
    tied = LlamaConfig.from_dict({**TINY.to_dict(), "tie_word_embeddings": True})
    prefix = "Model has `tie_word_embeddings=True` and a tied layer is part of the adapter"
    with pytest.warns(UserWarning, match=prefix.replace("`", ".")):
        peft.get_peft_model(pair(config=tied)[0], peft.LoraConfig(r=2, **options))
    with pytest.warns(UserWarning, match=prefix.replace("`", ".")):
        get_peft_model(pair(config=tied)[1], LoraConfig(r=2, **options))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # untied, or a tied model whose embeddings are left alone: silent
        get_peft_model(pair()[1], LoraConfig(r=2, **options))
        get_peft_model(pair(config=tied)[1], LoraConfig(r=2, target_modules="all-linear"))


def test_finished_rows_are_padded_with_the_first_eos_id_as_transformers(generation_pair):
    """No pad_token_id anywhere: transformers pads a finished row with eos_token_id[0] (the list's
    first), not the smallest of the ids."""
    reference, model = generation_pair
    ids = [[5, 7, 9, 11], [3, 4, 5, 6]]
    free = hf_generate(reference, ids, max_new_tokens=6, eos_token_id=[], pad_token_id=0)
    early = int(free[0, 5])  # row 0 ends at its second new token (row 1 at its first, here)
    unused = max(i for i in range(TINY.vocab_size) if i not in free)
    assert unused > early
    for eos in ([unused, early], [early, unused]):
        expected = hf_generate(reference, ids, max_new_tokens=6, eos_token_id=eos)
        got = our_generate(model, ids, max_new_tokens=6, eos_token_id=eos)
        np.testing.assert_array_equal(got, expected, err_msg=str(eos))
        assert (got == eos[0]).any()  # for [unused, early]: unused appears only as the padding


# ==================================================================================================
# TextStreamer: the same pieces of text as transformers' TextStreamer
# ==================================================================================================
@pytest.mark.parametrize("text", ["Hello world, this is a test.\nNew line here", "héllo wörld 日本語 text",
                                  "no-space-at-all", "ends with space ", "a\n\nb"])
@pytest.mark.parametrize("skip_prompt", [True, False])
def test_text_streamer_gives_transformers_pieces(text, skip_prompt):
    from minilora.generate import TextStreamer
    from minilora.tokenizer import ByteTokenizer
    tokenizer = ByteTokenizer()  # one token per byte: half characters and every rule get exercised
    ids = tokenizer.encode(text)
    pieces = []
    for streamer_class, as_value in ((transformers.TextStreamer, torch.as_tensor), (TextStreamer, np.asarray)):
        received = []
        streamer = streamer_class(tokenizer, skip_prompt=skip_prompt)
        streamer.on_finalized_text = lambda piece, stream_end=False: received.append((piece, stream_end))
        streamer.put(as_value([ids[:3]]))  # generate() passes the prompt first, then each new token
        for token in ids[3:]:
            streamer.put(as_value([token]))
        streamer.end()
        pieces.append(received)
    assert pieces[1] == pieces[0]


def test_no_repeat_ngram_size_and_min_p_as_transformers(generation_pair):
    """no_repeat_ngram_size (the 'How to generate' blog's fix for loops) and min_p (sampling): the tokens
    and the processed scores equal transformers' (they were refused as unimplemented)."""
    reference, model = generation_pair
    ids, mask = LEFT_PADDED
    looping = hf_generate(reference, PROMPT, max_new_tokens=12, eos_token_id=[], pad_token_id=0)
    for n in (1, 2, 3):
        options = dict(max_new_tokens=12, eos_token_id=[], pad_token_id=0, no_repeat_ngram_size=n)
        expected = hf_generate(reference, PROMPT, **options)
        np.testing.assert_array_equal(our_generate(model, PROMPT, **options), expected, err_msg=f"n={n}")
        np.testing.assert_array_equal(our_generate(model, ids, mask, **options),
                                      hf_generate(reference, ids, mask, **options))
    assert not np.array_equal(our_generate(model, PROMPT, max_new_tokens=12, eos_token_id=[], no_repeat_ngram_size=2),
                              looping)  # (the greedy text repeats itself: the rule changes it)
    options = dict(max_new_tokens=1, pad_token_id=0, eos_token_id=[], do_sample=True, min_p=0.2, temperature=0.8,
                   return_dict_in_generate=True, output_scores=True)
    theirs = reference.generate(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), **options).scores[0].numpy(force=True)
    ours = model.generate(ml.tensor(ids), attention_mask=ml.tensor(mask), **options).scores[0].numpy(force=True)
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(theirs))
    assert 1 < np.isfinite(ours).sum() < ours.size  # min_p removed some tokens and kept several
    np.testing.assert_allclose(ours[np.isfinite(ours)], theirs[np.isfinite(theirs)], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="min_p"):
        our_generate(model, PROMPT, max_new_tokens=1, do_sample=True, min_p=1.5)


def test_output_hidden_states_as_transformers():
    reference, model = pair()
    expected = hf_out(reference, input_ids=IDS, output_hidden_states=True)
    out = model(IDS, output_hidden_states=True)
    assert len(out.hidden_states) == len(expected.hidden_states) == TINY.num_hidden_layers + 1
    for ours, theirs in zip(out.hidden_states, expected.hidden_states):
        np.testing.assert_allclose(ours.numpy(force=True), theirs.numpy(force=True), rtol=1e-5, atol=1e-5)
    assert out.keys() == list(expected.keys()) == ["logits", "cache", "hidden_states"]
    assert model(IDS).hidden_states is None
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert len(peft_model(IDS, output_hidden_states=True).hidden_states) == TINY.num_hidden_layers + 1


# ==================================================================================================
# from_pretrained: the loading options tutorials pass
# ==================================================================================================
@pytest.mark.parametrize("options", [dict(device_map="auto"), dict(device_map="cpu"), dict(device_map={"": "cpu"}),
                                     dict(device_map=torch.device("cpu")), dict(low_cpu_mem_usage=True),
                                     dict(attn_implementation="eager"), dict(attn_implementation="sdpa"),
                                     dict(local_files_only=True), dict(trust_remote_code=True),
                                     dict(use_safetensors=True), dict(revision="main"),
                                     dict(dtype=torch.bfloat16, device_map="auto", attn_implementation="sdpa")])
def test_from_pretrained_takes_transformers_loading_options(tmp_path, options):
    reference, _ = pair()
    reference.save_pretrained(str(tmp_path))
    expected = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path), **options)
    model = LlamaForCausalLM.from_pretrained(str(tmp_path), **options)
    assert str(model.dtype) == str(expected.dtype).split(".")[-1] and model.device.type == "cpu"
    np.testing.assert_allclose(as_numpy(model(IDS).logits), as_numpy(hf_out(expected, input_ids=IDS).logits),
                               rtol=1e-5, atol=0.1 if "dtype" in options else 1e-5)  # (bf16: rounding apart)


def test_from_pretrained_refuses_what_it_cannot_do(tmp_path):
    pair()[1].save_pretrained(str(tmp_path))
    for options, message in ((dict(device_map={"model": "cpu", "lm_head": "cuda"}), "splits the model"),
                             (dict(attn_implementation="flash_attention_2"), "attn_implementation"),
                             (dict(use_safetensors=False), "pytorch_model.bin"),  # (no .bin: transformers' OSError)
                             (dict(device="cpu", device_map="cpu"), "not both")):  # (revision: taken, as there, r14)
        with pytest.raises((NotImplementedError, ValueError, OSError), match=message):
            LlamaForCausalLM.from_pretrained(str(tmp_path), **options)


def test_attention_mask_inferred_from_the_pad_id_as_transformers(generation_pair):
    """No attention_mask: transformers masks the pad_token_id's positions, unless the pad id is also an
    eos id (then it cannot tell padding from text). minilora attended to the padding."""
    reference, model = generation_pair
    ids = [[0, 0, 5, 7], [3, 4, 5, 6]]
    for options in (dict(pad_token_id=0, eos_token_id=[]), dict(pad_token_id=0, eos_token_id=[0]),
                    dict(pad_token_id=0, eos_token_id=[], repetition_penalty=2.0),
                    dict(pad_token_id=1, eos_token_id=[])):
        options = dict(max_new_tokens=4, **options)
        np.testing.assert_array_equal(our_generate(model, ids, **options), hf_generate(reference, ids, **options),
                                      err_msg=str(options))
    masked = our_generate(model, ids, max_new_tokens=4, pad_token_id=0, eos_token_id=[])
    np.testing.assert_array_equal(masked, our_generate(model, *LEFT_PADDED, max_new_tokens=4, pad_token_id=0,
                                                       eos_token_id=[]))


def test_peft_type_modules_to_save_and_targeted_module_names_as_peft():
    models = []
    for wrap, config_class in ((peft.get_peft_model, peft.LoraConfig), (get_peft_model, LoraConfig)):
        base = pair()[0 if wrap is peft.get_peft_model else 1]
        model = wrap(base, config_class(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"]))
        model.add_adapter("other", config_class(r=2, target_modules=["k_proj", "q_proj"]))
        models.append(model)
    theirs, ours = models
    assert ours.peft_type == theirs.peft_type == "LORA"
    assert ours.modules_to_save == theirs.modules_to_save == {"lm_head"}
    assert ours.targeted_module_names == theirs.targeted_module_names  # (adapter order, not module order)
    assert ours.base_model.targeted_module_names == theirs.base_model.targeted_module_names


def test_eval_forward_returns_the_cache_for_a_hand_written_decoding_loop():
    """The tutorial loop: out = model(ids); out = model(next_token, past_key_values=out.past_key_values).
    transformers returns the cache by default (config.use_cache); minilora returned None, so the second
    call silently ran the new token with no context at all."""
    reference, model = pair()
    reference.eval(), model.eval()
    theirs, ours = hf_out(reference, input_ids=IDS[:, :4]), model(IDS[:, :4])
    assert theirs.past_key_values is not None and ours.past_key_values is not None
    step = model(IDS[:, 4:5], past_key_values=ours.past_key_values)
    expected = hf_out(reference, input_ids=IDS[:, 4:5], past_key_values=theirs.past_key_values).logits.numpy(force=True)
    np.testing.assert_allclose(step.logits.numpy(force=True), expected, rtol=1e-5, atol=1e-5)
    full = model(IDS[:, :5]).logits.numpy(force=True)[:, -1]
    np.testing.assert_allclose(step.logits.numpy(force=True)[:, -1], full, rtol=1e-5, atol=1e-5)
    assert model(IDS, use_cache=False).past_key_values is None
    assert model.train()(IDS).past_key_values is not None  # training too, as transformers (round 8)
    model.gradient_checkpointing_enable()  # ... but not while recomputing layers (transformers turns it off)
    assert model(IDS).past_key_values is None


def test_peft_causal_lm_forward_takes_pefts_positional_order():
    """PeftModelForCausalLM.forward(input_ids, attention_mask, inputs_embeds, labels, ...): the third and
    fourth positionals are PEFT's, not the base model's (position_ids, past_key_values)."""
    options = dict(r=2, target_modules=["q_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    reference, model = pair()
    theirs = peft.get_peft_model(reference, peft.LoraConfig(**options))
    ours = get_peft_model(model, LoraConfig(**options))
    ours.load_state_dict({k: v.numpy(force=True) for k, v in theirs.state_dict().items()})
    mask = np.ones_like(IDS)
    with torch.no_grad():
        expected = theirs(torch.as_tensor(IDS), torch.as_tensor(mask), None, torch.as_tensor(IDS)).loss.item()
    assert ours(IDS, mask, None, IDS).loss.item() == pytest.approx(expected, rel=1e-5)
    embeds = model.get_input_embeddings()(ml.tensor(IDS))
    assert ours(None, mask, embeds, IDS).loss.item() == pytest.approx(expected, rel=1e-5)


def test_merge_and_unmerge_warnings_and_adapter_names_type_as_peft():
    options = dict(r=2, target_modules=["q_proj"], init_lora_weights=False)
    messages = []
    for wrap, config_class in ((peft.get_peft_model, peft.LoraConfig), (get_peft_model, LoraConfig)):
        model = wrap(pair()[0 if wrap is peft.get_peft_model else 1], config_class(**options))
        model.add_adapter("other", config_class(**options))
        seen = []
        for step in (lambda: model.unmerge_adapter(), lambda: model.merge_adapter(), lambda: model.merge_adapter(),
                     lambda: model.merge_adapter(["default", "other"])):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                step()
            seen.append(sorted({str(w.message) for w in caught if "checkpointing" not in str(w.message)}))
        with pytest.raises(TypeError, match="adapter_names should be a list of strings"):
            model.merge_adapter("other")
        messages.append(seen)
    assert messages[1] == messages[0]
    assert messages[0][0] == ["Already unmerged. Nothing to do."]


def test_resize_token_embeddings_mean_resizing_false_draws_a_fresh_init_as_transformers():
    reference, model = pair(config=LlamaConfig.from_dict(TINY.to_dict()))  # (resizing changes the config)
    vocab = TINY.vocab_size
    for resized in (reference, model):
        resized.resize_token_embeddings(vocab + 200, mean_resizing=False)
    theirs = as_numpy(reference.get_input_embeddings().weight)[vocab:]
    ours = as_numpy(model.get_input_embeddings().weight)[vocab:]
    assert ours.shape == theirs.shape and model.config.vocab_size == reference.config.vocab_size
    assert abs(ours.std() - theirs.std()) < 0.1 * theirs.std() and abs(ours.mean()) < 0.01  # N(0, 0.02^2) both
    np.testing.assert_array_equal(as_numpy(model.get_input_embeddings().weight)[:vocab],
                                  as_numpy(reference.get_input_embeddings().weight)[:vocab])
    kept = model.resize_token_embeddings(vocab + 201)  # the default: drawn around the old rows' mean
    spread = np.sqrt(1e-9 * as_numpy(kept.weight)[:-1].var(axis=0))  # (1e-9 * their covariance)
    assert (np.abs(as_numpy(kept.weight)[-1] - as_numpy(kept.weight)[:-1].mean(axis=0)) < 6 * spread + 1e-9).all()


def test_top_p_zero_keeps_the_most_likely_token_as_transformers(generation_pair):
    """transformers takes top_p=0 (only the most likely token survives: sampling becomes greedy);
    minilora refused it."""
    reference, model = generation_pair
    options = dict(max_new_tokens=1, pad_token_id=0, eos_token_id=[], do_sample=True, top_p=0.0,
                   return_dict_in_generate=True, output_scores=True)
    theirs = reference.generate(torch.as_tensor(PROMPT), **options).scores[0].numpy(force=True)
    ours = model.generate(ml.tensor(PROMPT), **options).scores[0].numpy(force=True)
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))
    assert np.isfinite(ours).sum() == 1
    greedy = our_generate(model, PROMPT, max_new_tokens=6, eos_token_id=[])
    np.testing.assert_array_equal(our_generate(model, PROMPT, max_new_tokens=6, eos_token_id=[], do_sample=True,
                                               top_p=0.0), greedy)


# ==================================================================================================
# get_layer_status / get_model_status: PEFT's troubleshooting view, field for field
# ==================================================================================================
def test_layer_and_model_status_equal_pefts():
    import dataclasses
    reports = []
    for wrap, config_class in ((peft.get_peft_model, peft.LoraConfig), (get_peft_model, LoraConfig)):
        model = wrap(pair()[0 if wrap is peft.get_peft_model else 1],
                     config_class(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"]))
        model.add_adapter("other", config_class(r=2, target_modules=["q_proj", "k_proj"]))
        seen = []
        for change in (lambda: None, lambda: model.merge_adapter(), lambda: model.unmerge_adapter(),
                       lambda: model.set_requires_grad("other"), lambda: model.base_model.disable_adapter_layers()):
            change()
            seen.append(([dataclasses.asdict(s) for s in model.get_layer_status()],
                         dataclasses.asdict(model.get_model_status())))
        reports.append(seen)
    assert reports[1] == reports[0]
    assert reports[0][3][1]["requires_grad"]["other"] is True  # set_requires_grad("other")
    assert reports[0][4][1]["enabled"] is False and reports[0][4][1]["trainable_params"] == 0  # disabled: frozen


def test_disable_adapter_freezes_the_adapters_meanwhile_as_peft():
    """Inside ``with model.disable_adapter():`` PEFT freezes the adapters (nothing of them is used), and
    re-enabling makes the active ones train again."""
    rows = []
    for wrap, config_class in ((peft.get_peft_model, peft.LoraConfig), (get_peft_model, LoraConfig)):
        model = wrap(pair()[0 if wrap is peft.get_peft_model else 1],
                     config_class(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"]))
        row = [trainable_adapters(model)]
        with model.disable_adapter():
            row.append(trainable_adapters(model))
        rows.append(row + [trainable_adapters(model)])
    assert rows[1] == rows[0] == [["default"], [], ["default"]]


def test_llama_config_accepts_every_key_of_its_to_dict_as_transformers():
    """LlamaConfig(**cfg.to_dict()) -- the copy idiom -- works in transformers; 'architectures' was a TypeError."""
    sizes = dict(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, rope_theta=500.0)
    hf = transformers.LlamaConfig(**sizes)
    hf_copy = transformers.LlamaConfig(**hf.to_dict(), my_note="kept")
    ours = LlamaConfig(**sizes)
    copy = LlamaConfig(**ours.to_dict(), my_note="kept")
    assert copy.to_dict() == {**ours.to_dict(), "my_note": "kept"}
    assert (copy.rope_theta, copy.num_key_value_heads) == (hf_copy.rope_parameters["rope_theta"], 2)
    assert copy.my_note == hf_copy.my_note == "kept"  # unknown keys become attributes, as transformers'
    positional = LlamaConfig(40, 16, 32, 2, 4, architectures=["LlamaForCausalLM"])
    assert positional.to_dict()["num_hidden_layers"] == 2
