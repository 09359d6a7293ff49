"""generate off its tested paths, as transformers 5.25 users write it: assisted decoding (``assistant_model``,
speculative sampling, ``prompt_lookup_num_tokens``), classifier-free guidance (``guidance_scale``,
``negative_prompt_ids``), ``watermarking_config``, streamers fed several tokens at once, ``cache_implementation``,
a GenerationConfig passed second (positionally) and options set as attributes of ``model.generation_config``.

Each test runs the same call on transformers' LlamaForCausalLM and minilora's, with the same tiny float32 weights
and the same seed, and compares the tokens exactly and the scores within 2e-5 (float32 logits of a 2-layer model
whose matmuls sum in another order than torch's; the largest difference seen is 7e-6).

Before this round minilora refused assistant_model / guidance_scale / prompt_lookup_num_tokens /
watermarking_config, read ``model.generate(ids, config)`` as a TypeError, ignored ``generation_config.guidance_scale
= 2.0`` set as an attribute (another answer than transformers', silently), took ``cache_implementation="quantized"``
(other numbers there) and ``low_memory=True`` with beams (transformers' ValueError) without a word.
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
from minilora.models import LlamaConfig, LlamaForCausalLM  # noqa: E402
from minilora.nn.generation import GenerationConfig, TextStreamer  # noqa: E402
from minilora.tokenizer import ByteTokenizer  # noqa: E402

from test_llama import hf_model  # noqa: E402

PROMPT = [[5, 9, 3, 17, 22]]
SCORE_TOLERANCE = 2e-5  # see the module docstring


def _config(**changes):
    return LlamaConfig(**{**dict(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 pad_token_id=0, bos_token_id=1, eos_token_id=2), **changes})


def _twin(seed, **changes):
    """(transformers' model, minilora's): the same float32 weights."""
    config = _config(**changes)
    reference = hf_model(transformers, config, dtype="float32", seed=seed).eval()
    reference.set_attn_implementation("sdpa")
    model = LlamaForCausalLM(config, dtype="float32")
    model.load_state_dict({k: v.numpy(force=True) for k, v in reference.state_dict().items()})
    return reference, model


@pytest.fixture(scope="module")
def models():
    """{"hf": (model, assistant), "ml": (model, assistant)}: the assistant is a 1-layer model of the same vocabulary."""
    (reference, model), (helper_reference, helper) = _twin(0), _twin(1, num_hidden_layers=1)
    return {"hf": (reference, helper_reference), "ml": (model, helper)}


def _call(models, library, seed=0, assistant=False, prompt=PROMPT, **options):
    """(the answer or the exception, how many times the assistant ran) for ``model.generate(prompt, **options)``."""
    model, helper = models[library]
    options = {key: (value(library) if callable(value) else value) for key, value in options.items()}
    if assistant:
        options["assistant_model"] = helper
    calls = []
    hook = helper.register_forward_hook(lambda *args: calls.append(1))
    torch.manual_seed(seed)
    ml.manual_seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = model.generate(torch.tensor(prompt) if library == "hf" else np.array(prompt), **options)
    except Exception as exc:  # (compared: both libraries must raise alike)
        result = exc
    finally:
        hook.remove()
    return result, len(calls)


def _same_answer(theirs, ours):
    if isinstance(theirs, Exception):
        assert type(ours) is type(theirs) and str(theirs)[:60] == str(ours)[:60], (theirs, ours)
        return
    assert not isinstance(ours, Exception), ours
    if not hasattr(theirs, "sequences"):
        assert ours.tolist() == theirs.tolist()
        return
    assert ours.sequences.tolist() == theirs.sequences.tolist()
    for name in ("scores", "logits"):
        if getattr(theirs, name) is None:
            assert getattr(ours, name) is None
            continue
        assert len(getattr(ours, name)) == len(getattr(theirs, name))
        for a, b in zip(getattr(ours, name), getattr(theirs, name)):
            a, b = a.numpy(), b.numpy()
            assert (np.isinf(a) == np.isinf(b)).all()
            np.testing.assert_allclose(np.where(np.isinf(a), 0, a), np.where(np.isinf(b), 0, b), atol=SCORE_TOLERANCE)


def _both(models, **options):
    (theirs, their_calls), (ours, our_calls) = (_call(models, library, **options) for library in ("hf", "ml"))
    _same_answer(theirs, ours)
    return theirs, ours, their_calls, our_calls


DICT = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)


@pytest.mark.parametrize("assistant_config", [
    {}, dict(num_assistant_tokens=3), dict(num_assistant_tokens=3, num_assistant_tokens_schedule="heuristic"),
    dict(num_assistant_tokens=2, num_assistant_tokens_schedule="heuristic_transient"),
    dict(num_assistant_tokens=5, assistant_confidence_threshold=0.0), dict(assistant_confidence_threshold=0.2)])
def test_assisted_greedy_is_greedy_and_calls_the_assistant_as_transformers(models, assistant_config):
    """The tokens are plain greedy decoding's; the assistant runs as often as transformers' (its schedule and
    confidence threshold decide the drafts), and a "heuristic" schedule leaves the same count on its config."""
    for _, helper in models.values():
        helper.generation_config = type(helper.generation_config)(**assistant_config)
    theirs, ours, their_calls, our_calls = _both(models, assistant=True, max_new_tokens=14, **DICT)
    assert our_calls == their_calls > 0
    plain, _ = _call(models, "ml", max_new_tokens=14)
    assert ours.sequences.tolist() == plain.tolist()
    assert models["ml"][1].generation_config.num_assistant_tokens == \
        models["hf"][1].generation_config.num_assistant_tokens


@pytest.mark.parametrize("options", [dict(eos_token_id=[7, 8]), dict(repetition_penalty=1.5, min_new_tokens=3),
                                     dict(guidance_scale=2.0), dict(no_repeat_ngram_size=2, max_new_tokens=9),
                                     dict(assistant_ensemble_weight=0.5)])
def test_assisted_greedy_with_processors(models, options):
    """(assistant_ensemble_weight w: the drafts are compared with the argmax of w p + (1 - w) q, DIVERSE's
    ensemble, so the answer is no longer plain greedy's -- transformers' answer.)"""
    for _, helper in models.values():
        helper.generation_config = type(helper.generation_config)(num_assistant_tokens=4)
    _both(models, assistant=True, **{"max_new_tokens": 12, **options, **DICT})


@pytest.mark.parametrize("seed, options", [(0, {}), (1, dict(top_k=5, temperature=0.7)), (2, dict(top_p=0.8)),
                                           (3, dict(temperature=1.3, renormalize_logits=True)),
                                           (0, dict(pad_token_id=7)), (1, dict(assistant_ensemble_weight=0.3))])
def test_speculative_sampling_draws_transformers_tokens(models, seed, options):
    """do_sample with an assistant: the assistant drafts with the warpers applied twice (transformers hands its
    generate the warped processor list and it adds its own), rand() accepts or rejects each draft, the residual
    max(p - q, 0) is drawn from: the same tokens for the same seed. The assistant's generate infers its mask
    each round, so a generated token equal to the pad id (7 here) is masked out of its drafts from then on.
    (Where scikit-learn is installed both move the confidence threshold along a ROC curve.)"""
    for _, helper in models.values():
        helper.generation_config = type(helper.generation_config)(num_assistant_tokens=5)
    _, _, their_calls, our_calls = _both(models, seed=seed, assistant=True, do_sample=True, max_new_tokens=15,
                                         **options, **DICT)
    assert our_calls == their_calls


@pytest.mark.parametrize("seed, options", [
    (0, dict(prompt_lookup_num_tokens=3)), (1, dict(prompt_lookup_num_tokens=4, max_matching_ngram_size=3)),
    (2, dict(prompt_lookup_num_tokens=4, bad_words_ids=[[7]], eos_token_id=9)),
    (3, dict(prompt_lookup_num_tokens=3, do_sample=True)),
    (4, dict(prompt_lookup_num_tokens=3, assistant_ensemble_weight=0.5))])  # (transformers' ValueError)
def test_prompt_lookup_decoding(models, seed, options):
    """The draft is what followed the latest n-gram earlier in the sequence (cut before a token the processors
    forbid, and before an eos id); greedy keeps the matching tokens, sampling draws every position at once."""
    _both(models, seed=seed, prompt=[[5, 9, 3, 5, 9, 3, 7, 5, 9]], max_new_tokens=10, **options, **DICT)


@pytest.mark.parametrize("options", [dict(assistant=True), dict(prompt_lookup_num_tokens=2)])
def test_assisted_hidden_states_and_attentions_per_token(models, options):
    """One tuple per kept token, split from each round's forward pass as transformers' _split_model_outputs:
    the first holds the prompt's positions (eager attention's weights [:prompt, :prompt])."""
    models["ml"][1].generation_config = GenerationConfig(num_assistant_tokens=3)
    models["hf"][1].generation_config = transformers.GenerationConfig(num_assistant_tokens=3)
    try:
        for library in models:
            models[library][0].set_attn_implementation("eager")
        theirs, ours, _, _ = _both(models, max_new_tokens=9, return_dict_in_generate=True, output_hidden_states=True,
                                   output_attentions=True, **options)
    finally:
        for library in models:
            models[library][0].set_attn_implementation("sdpa")
    for name in ("hidden_states", "attentions"):
        assert len(getattr(ours, name)) == len(getattr(theirs, name)) == 9
        for our_token, their_token in zip(getattr(ours, name), getattr(theirs, name)):
            for a, b in zip(our_token, their_token):
                assert tuple(a.shape) == tuple(b.shape)
                np.testing.assert_allclose(a.numpy(), b.numpy(), atol=SCORE_TOLERANCE)


@pytest.mark.parametrize("options", [dict(output_scores=True), {}, dict(num_beams=2),
                                     dict(output_scores=True, assistant=True)])
def test_a_stopping_criterion_sees_the_scores_output_so_far(models, options):
    """transformers hands a stopping criterion the tuple of the scores output so far (None without
    output_scores); minilora's greedy decoding handed it the step's [batch, vocab] array, so ``len(scores) >= 3``
    counted the rows, not the steps, and its beam search an empty tuple for None."""
    def criteria(library):
        base = transformers.StoppingCriteria if library == "hf" else ml.nn.generation.StoppingCriteria
        lists = transformers.StoppingCriteriaList if library == "hf" else ml.nn.generation.StoppingCriteriaList

        class AfterThreeScores(base):
            def __call__(self, input_ids, scores, **kwargs):
                stop = input_ids.shape[1] >= 8 if scores is None else \
                    len(scores) >= 3 and bool(scores[-1].shape[-1] == 37)
                return (torch if library == "hf" else ml).full((input_ids.shape[0],), stop, dtype=bool)
        return lists([AfterThreeScores()])
    theirs, ours, _, _ = _both(models, prompt=[[5, 9, 3, 17, 22]] * (1 if "assistant" in options else 4),
                               max_new_tokens=8, return_dict_in_generate=True, stopping_criteria=criteria, **options)
    assert ours.sequences.shape[1] == theirs.sequences.shape[1] == 8


def test_an_assistant_with_beam_search_is_warned_about_and_left_out(models):
    """transformers runs beam search and warns that the assistant is ignored; minilora said nothing."""
    with pytest.warns(UserWarning, match="assisted generate is only supported with Greedy Search and Sample"):
        ours = models["ml"][0].generate(np.array(PROMPT), assistant_model=models["ml"][1], num_beams=2,
                                        max_new_tokens=4)
    assert ours.tolist() == _call(models, "hf", assistant=True, num_beams=2, max_new_tokens=4)[0].tolist()


def test_cache_crop_and_update_as_transformers_5():
    """DynamicCache.crop(-n) drops n positions, crop(0) keeps them all (minilora's emptied the cache) and a
    positive count is transformers 5's ValueError (minilora kept that many, 4.x's meaning); update takes
    (keys, values, layer_idx), its order (minilora's took layer_idx first)."""
    theirs, ours = transformers.DynamicCache(), ml.nn.llama.DynamicCache()
    for cache, library in ((theirs, torch), (ours, ml)):
        keys, values = cache.update(library.ones(1, 2, 5, 4), library.zeros(1, 2, 5, 4), 0)
        assert tuple(keys.shape) == (1, 2, 5, 4) and float(keys.sum()) == 40 and float(values.sum()) == 0
    for cache in (theirs, ours):
        with pytest.raises(ValueError, match="positive value"):
            cache.crop(3)
        cache.crop(0)
        assert cache.get_seq_length() == 5
        cache.crop(-2)
        assert cache.get_seq_length() == 3


@pytest.mark.parametrize("options", [dict(num_return_sequences=2, do_sample=True), dict(use_cache=False),
                                     dict(assistant_ensemble_weight=1.0),
                                     dict(prompt=[[5, 9, 3], [4, 8, 6]])])
def test_assisted_refusals_are_transformers(models, options):
    theirs, ours, _, _ = _both(models, assistant=True, max_new_tokens=5, **options)
    assert isinstance(theirs, Exception)


def test_assisted_with_stop_strings_is_refused_as_transformers(models, tmp_path):
    """transformers' assistant generates with the call's stop strings but without its tokenizer: a ValueError
    (prompt lookup, which runs no second generate, takes them)."""
    ByteTokenizer().save_pretrained(str(tmp_path))
    tokenizers = {"hf": transformers.AutoTokenizer.from_pretrained(str(tmp_path)),
                  "ml": ml.tokenizer.from_pretrained(str(tmp_path))}
    theirs, _, _, _ = _both(models, assistant=True, max_new_tokens=6, stop_strings=["\x08"],
                            tokenizer=tokenizers.__getitem__)
    assert isinstance(theirs, ValueError)
    _both(models, max_new_tokens=6, stop_strings=["\x08"], prompt_lookup_num_tokens=2, tokenizer=tokenizers.__getitem__)


@pytest.mark.parametrize("options", [
    dict(guidance_scale=1.5), dict(guidance_scale=3.0, negative_prompt_ids=lambda lib: _ids(lib, [[7, 30, 11]])),
    dict(guidance_scale=0.0, negative_prompt_ids=lambda lib: _ids(lib, [[7, 30, 11]]), use_cache=False),
    dict(guidance_scale=2.0, prompt=[[5, 9, 3], [4, 8, 6]]), dict(guidance_scale=2.0, num_beams=2),
    dict(guidance_scale=2.0, do_sample=True, seed=4), dict(guidance_scale=1.0)])
def test_classifier_free_guidance(models, options):
    """The unconditional branch (the negative prompt, else the last prompt token) runs beside, on its own cache
    (or recomputed with use_cache=False), and the scores are scale * (cond - uncond) + uncond, first of the
    processors -- in greedy, sampling and beam search."""
    _both(models, max_new_tokens=7, **options, **DICT)


def _ids(library, ids):
    return torch.tensor(ids) if library == "hf" else np.array(ids)


def _watermarking(**fields):
    return lambda library: transformers.WatermarkingConfig(**fields) if library == "hf" else fields


@pytest.mark.parametrize("options", [dict(watermarking_config=_watermarking(bias=2.5)),
                                     dict(watermarking_config=_watermarking(context_width=2), num_beams=2),
                                     dict(watermarking_config=_watermarking(greenlist_ratio=0.5), do_sample=True)])
def test_watermarking_greenlists_are_torch_draws(models, options):
    """The green list: randperm(vocab) from a generator seeded with hashing_key * the previous token."""
    _both(models, max_new_tokens=7, **options, **DICT)


def test_streamers_get_the_tokens_each_round_accepts(models, tmp_path):
    """A streamer gets the prompt, then each round's kept tokens (several at once with an assistant or prompt
    lookup): TextStreamer's printed pieces are transformers'."""
    ByteTokenizer().save_pretrained(str(tmp_path))
    tokenizers = {"hf": transformers.AutoTokenizer.from_pretrained(str(tmp_path)),
                  "ml": ml.tokenizer.from_pretrained(str(tmp_path))}
    pieces = {}

    def streamer(library):
        base = transformers.TextStreamer if library == "hf" else TextStreamer

        class Recorder(base):
            def on_finalized_text(self, text, stream_end=False):
                pieces.setdefault(library, []).append((text, stream_end))
        return Recorder(tokenizers[library])
    prompt = [[33, 32, 35, 33, 32, 35, 34, 33, 32]]  # "! #! #\"! " and its continuation are printable
    for options in (dict(assistant=True), dict(prompt_lookup_num_tokens=3), {}):
        pieces.clear()
        _both(models, prompt=prompt, max_new_tokens=12, streamer=streamer, **options)
        assert pieces["ml"] == pieces["hf"] and len(pieces["hf"]) > 2


def test_cache_implementations_as_transformers_on_the_cpu(models):
    """static / sliding_window / hybrid / dynamic: the same tokens; quantized (optimum-quanto's numbers) and
    paged (continuous batching's answer) are refused by name; a name transformers lacks is its ValueError;
    low_memory=True with beams is transformers 5's ValueError."""
    for name in ("static", "sliding_window", "hybrid", "dynamic"):
        _both(models, max_new_tokens=6, cache_implementation=name)
    for name in ("quantized", "paged"):
        with pytest.raises(NotImplementedError, match=name):
            models["ml"][0].generate(np.array(PROMPT), max_new_tokens=3, cache_implementation=name)
    with pytest.raises(ValueError, match="Invalid `cache_implementation`"):
        models["ml"][0].generate(np.array(PROMPT), max_new_tokens=3, cache_implementation="fast")
    theirs, _, _, _ = _both(models, max_new_tokens=3, num_beams=2, low_memory=True)
    assert isinstance(theirs, ValueError)


def test_a_generation_config_passed_second_or_set_as_attributes(models):
    """``model.generate(ids, config)`` takes the config positionally, keywords override it; an option set as an
    attribute of ``model.generation_config`` (guidance_scale, num_assistant_tokens) is read by generate."""
    configs = {"hf": transformers.GenerationConfig, "ml": GenerationConfig}
    for library in configs:
        model, _ = models[library]
        config = configs[library](max_new_tokens=4, repetition_penalty=1.3)
        prompt = _ids(library, PROMPT)
        positional = model.generate(prompt, config, max_new_tokens=6)
        assert positional.shape[1] == 11
        model.generation_config.guidance_scale = 2.0
        try:
            guided = model.generate(prompt, max_new_tokens=6)
        finally:
            model.generation_config.guidance_scale = None
        configs[library] = (positional.tolist(), guided.tolist())
    assert configs["ml"] == configs["hf"]
    assert models["ml"][0].generation_config.guidance_scale is None
