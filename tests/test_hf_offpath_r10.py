"""transformers users' scripts off the paths the earlier rounds tested, run with transformers + torch and with
minilora on the same weights (a tiny random Llama; the r9 Llama-2-style tokenizer folder), one test per
divergence found:

* ``DataCollatorForLanguageModeling(mlm=True)``: BERT-style masking (80% mask token, 10% random, 10% kept)
  with transformers' draws, seeded or global, torch's or NumPy's generator (minilora refused mlm=True);
* transformers 5's ``rope_parameters`` spelling set on a config (``config.rope_parameters = {...}`` was
  kept aside, unread: the model rotated with plain RoPE) or passed to ``from_pretrained`` (a TypeError);
* ``generate(past_key_values=DynamicCache())`` and the KV-cache doc's prefix reuse (a deep copy of a cached
  prompt prefix passed to generate): refused as an unknown model_kwarg; ``DynamicCache`` had no name here;
* ``generate(logits_processor=[...], stopping_criteria=[...])`` with the user's own ``LogitsProcessor`` /
  ``StoppingCriteria`` subclasses (the text-generation docs' recipe): refused;
* beam search ran every beam's whole sequence again at each step and returned no ``cache``: now it runs the
  newest token on a KV cache reordered to follow the chosen beams (transformers' reorder_cache), as there;
* ``GenerationConfig.update(**kwargs)`` (set the options named, return the rest; ``defaults_only``,
  ``allow_custom_entries``): an AttributeError;
* ``config.model_type`` / ``config.use_cache`` and the other attributes a config.json may leave out, read
  before anyone set them: an AttributeError;
* ``generate(inputs_embeds=...)`` (a soft prompt before the token embeddings), ``max_time=``, beam search with
  the user's processors / criteria, a custom GenerationConfig entry, ``logits_to_keep=``: refused; the
  refusals of ``temperature=0`` and ``max_new_tokens=0`` in other words than transformers';
Skipped when torch / transformers / tokenizers are not installed."""
import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import minilora as ml  # noqa: E402
import minilora.data as ml_data  # noqa: E402
from minilora import models  # noqa: E402
from minilora.tokenizer import from_pretrained as ml_tokenizer  # noqa: E402
from test_hf_tutorials_r9 import TEXTS, _llama2_style_tokenizer, plain  # noqa: E402


@pytest.fixture(scope="module")
def masking_tokenizers(tmp_path_factory):
    """(transformers' tokenizer, minilora's) with a mask token added, pad = eos, as a BERT-style recipe has."""
    folder = _llama2_style_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    pair = transformers.AutoTokenizer.from_pretrained(str(folder)), ml_tokenizer(folder)
    for tokenizer in pair:
        tokenizer.add_special_tokens({"mask_token": "<mask>"})
        tokenizer.pad_token = tokenizer.eos_token
    return pair


@pytest.mark.parametrize("options", [
    {"seed": 3}, {},  # the collator's own generator; the global one (torch.manual_seed before each batch)
    {"mlm_probability": 0.5, "mask_replace_prob": 0.5, "random_replace_prob": 0.4, "seed": 2},
    {"mlm_probability": 0.6, "mask_replace_prob": 1.0, "random_replace_prob": 0.0, "pad_to_multiple_of": 8},
    {"mlm_probability": 0.5, "return_tensors": "np", "seed": 5}, {"mlm_probability": 0.5, "return_tensors": "np"}])
def test_mlm_collator_masks_as_transformers_bit_for_bit(masking_tokenizers, options):
    theirs, ours = masking_tokenizers
    collate_t = transformers.DataCollatorForLanguageModeling(theirs, **options)
    collate_m = ml_data.DataCollatorForLanguageModeling(ours, **options)
    for batch in range(2):  # the seeded generator goes on from one batch to the next
        special = bool(batch)  # the tokenizer's special_tokens_mask, or the collator asks the tokenizer
        features_t = [dict(theirs(t, return_special_tokens_mask=special)) for t in TEXTS * 4]
        features_m = [dict(ours(t, return_special_tokens_mask=special)) for t in TEXTS * 4]
        torch.manual_seed(batch), ml.manual_seed(batch), np.random.seed(batch)
        expected = plain(collate_t(features_t))
        np.random.seed(batch)
        got = plain(collate_m(features_m))
        assert got == expected
        labels, picked = np.array(got["labels"][1]), np.array(got["labels"][1]) != -100
        assert picked.any() and (np.array(got["input_ids"][1])[picked] != labels[picked]).any()  # some masked
    rows = [theirs(t)["input_ids"] for t in TEXTS]
    torch.manual_seed(7), ml.manual_seed(7), np.random.seed(7)
    expected = plain(collate_t(rows))
    np.random.seed(7)
    assert plain(collate_m(rows)) == expected
    assert ours.get_special_tokens_mask(rows[0], already_has_special_tokens=True) == \
        theirs.get_special_tokens_mask(rows[0], already_has_special_tokens=True)


def test_mlm_collator_refusals_as_transformers(masking_tokenizers):
    theirs, ours = masking_tokenizers
    for bad in ({"mlm_probability": 1.5}, {"mask_replace_prob": 0.9, "random_replace_prob": 0.2},
                {"random_replace_prob": -0.1}):
        with pytest.raises(ValueError) as expected:
            transformers.DataCollatorForLanguageModeling(theirs, **bad)
        with pytest.raises(ValueError, match=str(expected.value)):
            ml_data.DataCollatorForLanguageModeling(ours, **bad)


TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)
IDS = [[1, 5, 9, 13, 7, 3, 40, 22], [1, 22, 3, 40, 8, 9, 63, 2]]
# float32 logits: transformers computes the RoPE tables in float32, minilora in float64 rounded once (see
# LlamaRotaryEmbedding), so the logits differ by a few ulp (1.2e-7 seen); a wrong rotation moves them by 1e-4+
FLOAT32_ROPE_ATOL = 1e-5


def build(config_t, config_m, seed=0):
    """transformers' model from ``config_t`` and minilora's from ``config_m``, with the same weights."""
    torch.manual_seed(seed)
    reference = transformers.LlamaForCausalLM(config_t).eval()
    model = models.LlamaForCausalLM(config_m).eval()
    model.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    return reference, model


def logits_of(reference, model, ids=IDS, **kwargs):
    with torch.no_grad():
        expected = reference(torch.tensor(ids), **kwargs).logits.numpy()
    return model(ml.tensor(ids), **kwargs).logits.numpy(), expected


@pytest.mark.parametrize("rope", [{"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0},
                                  {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0},
                                  {"rope_type": "default", "rope_theta": 500.0}])
def test_setting_rope_parameters_on_a_config_rotates_as_transformers(rope):
    config_t, config_m = transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY)
    config_t.rope_parameters, config_m.rope_parameters = dict(rope), dict(rope)
    # (minilora also writes yarn's original_max_position_embeddings, transformers' default for it)
    assert {k: config_m.rope_parameters[k] for k in config_t.rope_parameters} == dict(config_t.rope_parameters)
    got, expected = logits_of(*build(config_t, config_m), ids=[list(range(1, 60))])
    np.testing.assert_allclose(got, expected, atol=FLOAT32_ROPE_ATOL)
    config_m.rope_scaling = {"type": "linear", "factor": 2.0}  # transformers 4's name and key, standardized
    assert config_m.rope_parameters == {"rope_type": "linear", "factor": 2.0, "rope_theta": rope["rope_theta"]}
    with pytest.raises(ValueError, match="needs factor"):
        config_m.rope_parameters = {"rope_type": "linear"}


def test_from_pretrained_takes_rope_parameters_as_transformers(tmp_path):
    reference, _ = build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))
    reference.save_pretrained(str(tmp_path))
    rope = {"rope_type": "linear", "factor": 4.0, "rope_theta": 100.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path), rope_parameters=dict(rope)).eval()
    model = models.LlamaForCausalLM.from_pretrained(tmp_path, rope_parameters=dict(rope))
    assert model.config.rope_parameters == dict(reference.config.rope_parameters)
    np.testing.assert_allclose(*logits_of(reference, model, ids=[list(range(1, 60))]), atol=FLOAT32_ROPE_ATOL)
    assert models.LlamaConfig.from_pretrained(tmp_path, rope_parameters=dict(rope)).rope_parameters == rope


def test_generate_fills_and_reuses_a_kv_cache_as_transformers():
    reference, model = build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))
    ids = [[1, 5, 9, 13, 7, 3, 40, 22]]
    cache_t, cache_m = transformers.DynamicCache(), models.DynamicCache()
    expected = reference.generate(torch.tensor(ids), past_key_values=cache_t, max_new_tokens=4)
    assert model.generate(ml.tensor(ids), past_key_values=cache_m, max_new_tokens=4).tolist() == expected.tolist()
    assert cache_m.get_seq_length() == cache_t.get_seq_length() == 11
    with torch.no_grad():  # the docs' recipe: cache a shared prefix once, generate from copies of it
        prefix_t = reference(torch.tensor(ids)[:, :5], past_key_values=transformers.DynamicCache()).past_key_values
    prefix_m = model(ml.tensor(ids)[:, :5], past_key_values=models.DynamicCache()).past_key_values
    options = dict(max_new_tokens=4, do_sample=True, return_dict_in_generate=True, output_scores=True)
    torch.manual_seed(0)
    expected = reference.generate(torch.tensor(ids), past_key_values=copy.deepcopy(prefix_t), **options)
    ml.manual_seed(0)
    given = copy.deepcopy(prefix_m)
    got = model.generate(ml.tensor(ids), cache=given, **options)  # cache=: transformers 5's name
    assert got.sequences.tolist() == expected.sequences.tolist() and got.cache is given
    for step_got, step_expected in zip(got.scores, expected.scores):
        np.testing.assert_allclose(step_got.numpy(), step_expected.numpy(), atol=FLOAT32_ROPE_ATOL)
    assert prefix_m.get_seq_length() == 5  # the copy grew, not the prefix
    with pytest.raises(TypeError, match="transformers.cache_utils.DynamicCache"):
        model.generate(ml.tensor(ids), past_key_values=prefix_t, max_new_tokens=2)


def _user_classes(processor_base, criteria_base):
    """A user's processor and criteria, written once against the torch API (they run on both libraries)."""
    class BoostAndBan(processor_base):
        def __call__(self, input_ids, scores):
            scores[:, 7] = scores[:, 7] + 1.5  # before the warpers: top_k sees the boosted token
            scores[:, input_ids[0, -1]] = -float("inf")  # never repeat row 0's last token
            return scores

    class EndsWith(criteria_base):
        def __call__(self, input_ids, scores, **kwargs):
            return input_ids[:, -1] == 35

    class AtLength(criteria_base):
        def __call__(self, input_ids, scores, **kwargs):
            return input_ids.shape[1] >= 11  # one bool for every row
    return BoostAndBan, EndsWith, AtLength


@pytest.mark.parametrize("options", [{}, {"do_sample": True, "top_k": 4}])
def test_generate_applies_user_logits_processors_and_stopping_criteria_as_transformers(options):
    from minilora.nn import generation
    reference, model = build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))
    ids = [[1, 5, 9, 13, 7], [1, 22, 3, 40, 8]]
    outputs = []
    for generate, tensor, seed, module in ((reference.generate, torch.tensor, torch.manual_seed, transformers),
                                           (model.generate, ml.tensor, ml.manual_seed, generation)):
        boost, ends, at_length = _user_classes(module.LogitsProcessor, module.StoppingCriteria)
        seed(0)
        outputs.append(generate(tensor(ids), max_new_tokens=8, return_dict_in_generate=True, output_scores=True,
                                logits_processor=module.LogitsProcessorList([boost()]),
                                stopping_criteria=module.StoppingCriteriaList([ends(), at_length()]), **options))
    expected, got = outputs
    assert got.sequences.tolist() == expected.sequences.tolist()
    assert len(got.scores) == len(expected.scores) < 8  # the criteria ended the rows
    for step_got, step_expected in zip(got.scores, expected.scores):
        np.testing.assert_allclose(step_got.numpy(), step_expected.numpy(), atol=FLOAT32_ROPE_ATOL)


def test_config_reads_the_attributes_nobody_set_as_transformers():
    config_t, config_m = transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY)
    for name in ("model_type", "use_cache", "attention_dropout", "pretraining_tp", "output_attentions",
                 "output_hidden_states", "return_dict", "is_encoder_decoder"):
        assert getattr(config_m, name) == getattr(config_t, name), name
    config_t.use_cache = config_m.use_cache = False  # the fine-tuning tutorials' line, read back
    assert config_m.use_cache is config_t.use_cache is False and config_m.to_dict()["use_cache"] is False
    with pytest.raises(AttributeError, match="no attribute 'not_a_config_attribute'"):
        config_m.not_a_config_attribute


def test_beam_search_runs_on_a_kv_cache_and_returns_it_as_transformers():
    reference, model = build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))
    ids, mask = [[0, 0, 1, 5, 9], [1, 22, 3, 40, 8]], [[0, 0, 1, 1, 1], [1] * 5]
    options = dict(max_new_tokens=6, pad_token_id=0, num_beams=3, return_dict_in_generate=True, output_scores=True)
    for use_cache in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), use_cache=use_cache,
                                          **options)
        got = model.generate(ml.tensor(ids), attention_mask=ml.tensor(mask), use_cache=use_cache, **options)
        assert got.sequences.tolist() == expected.sequences.tolist()
        assert got.beam_indices.tolist() == expected.beam_indices.tolist()
        for step_got, step_expected in zip(got.scores, expected.scores):
            np.testing.assert_allclose(step_got.numpy(), step_expected.numpy(), atol=FLOAT32_ROPE_ATOL)
        assert (got.cache is None) == (expected.cache is None) == (not use_cache)
    assert got.keys() == list(expected.keys())
    got = model.generate(ml.tensor(ids), attention_mask=ml.tensor(mask), **options).cache
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), **options).cache
    assert got.get_seq_length() == expected.get_seq_length() == 10
    for best in (0, 3):  # each prompt's best running beam (the others may tie at "cannot continue")
        np.testing.assert_allclose(got.keys[1].numpy()[best], expected.layers[1].keys.numpy()[best],
                                   atol=FLOAT32_ROPE_ATOL)


@pytest.mark.parametrize("call", [dict(top_k=5, not_an_option=1), dict(defaults_only=True, max_new_tokens=9, top_k=3),
                                  dict(num_beam_groups=1, typical_p=0.9, top_p=0.5)])
def test_generation_config_update_as_transformers(call):
    from minilora.nn.generation import GenerationConfig
    reference, model = build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))
    reference.generation_config = transformers.GenerationConfig(max_new_tokens=3, do_sample=True)
    model.generation_config = GenerationConfig(max_new_tokens=3, do_sample=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert model.generation_config.update(**call) == reference.generation_config.update(**call)
        torch.manual_seed(0)
        expected = reference.generate(torch.tensor(IDS)).tolist()
    ml.manual_seed(0)
    assert model.generate(ml.tensor(IDS)).tolist() == expected
    assert model.generation_config.to_dict() == \
        {k: v for k, v in reference.generation_config.to_diff_dict().items() if k != "transformers_version"}
    custom = dict(allow_custom_entries=True, my_note=2)  # kept, as there (generate refuses what it cannot apply)
    assert model.generation_config.update(**custom) == reference.generation_config.update(**custom) == {}
    assert model.generation_config.to_dict()["my_note"] == reference.generation_config.my_note == 2


def _both(reference, model, call, *tensors, seed=0, **options):
    """``call(generate, tensor, *tensors)`` with transformers' model, then minilora's (the same seed, warnings off):
    (expected, got). ``tensors`` are torch tensors, handed to minilora as its own."""
    outputs = []
    for generate, convert, manual_seed in ((reference.generate, lambda t: t, torch.manual_seed),
                                           (model.generate, lambda t: ml.tensor(t.numpy()), ml.manual_seed)):
        manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outputs.append(call(generate, *(convert(t) for t in tensors), **options))
    return outputs


def _same_output(expected, got):
    assert got.sequences.tolist() == expected.sequences.tolist()
    assert len(got.scores) == len(expected.scores)
    for step_got, step_expected in zip(got.scores, expected.scores):
        np.testing.assert_allclose(step_got.numpy(), step_expected.numpy(), atol=FLOAT32_ROPE_ATOL)


def test_generate_from_inputs_embeds_as_transformers():
    """The soft-prompt / multimodal recipe: learned vectors before the prompt's token embeddings, run as
    ``generate(inputs_embeds=...)``; the answer holds only the new tokens (or follows the ids passed beside).
    Sampling several sequences and beam search repeat the embeddings, as transformers."""
    reference, model = build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))
    ids = torch.tensor([[0, 0, 1, 5, 9], [1, 22, 3, 40, 8]])
    torch.manual_seed(1)
    soft_prompt = torch.randn(2, 3, TINY["hidden_size"]) * 0.5
    with torch.no_grad():
        embeds = torch.cat([soft_prompt, reference.get_input_embeddings()(ids)], dim=1)
    mask = torch.tensor([[1, 1, 1, 0, 0, 1, 1, 1], [1] * 8])
    options = dict(max_new_tokens=5, return_dict_in_generate=True, output_scores=True)

    def from_embeds(generate, e, m, **o):
        return generate(inputs_embeds=e, attention_mask=m, **o)
    _same_output(*_both(reference, model, from_embeds, embeds, mask, do_sample=True, top_k=8, **options))
    expected, got = _both(reference, model, lambda generate, e, **o: generate(inputs_embeds=e, max_length=11, **o),
                          embeds, use_cache=False)  # max_length counts the embedded prompt; the cache is used anyway
    assert got.tolist() == expected.tolist() and len(got[0]) == 3
    for more in (dict(do_sample=True, num_return_sequences=2), dict(num_beams=3, num_return_sequences=2)):
        expected, got = _both(reference, model, from_embeds, embeds, mask, **more, **options)
        _same_output(expected, got)
        if "num_beams" in more:
            assert got.beam_indices.tolist() == expected.beam_indices.tolist()
    expected, got = _both(reference, model, lambda generate, i, e, **o: generate(i, inputs_embeds=e, **o),
                          ids, embeds[:, 3:], **options)  # the ids beside: kept in front of the new tokens
    _same_output(expected, got)
    assert got.sequences.tolist()[1][:5] == ids.tolist()[1]
    penalties, outputs = dict(max_new_tokens=6, repetition_penalty=1.5, no_repeat_ngram_size=2), []
    for generate, e in ((reference.generate, embeds), (model.generate, ml.tensor(embeds.numpy()))):
        with warnings.catch_warnings(record=True) as caught:  # they see the new tokens only: said, as there
            warnings.simplefilter("always")
            outputs.append(generate(inputs_embeds=e, **penalties).tolist())
        assert sum("newly generated tokens" in str(w.message) for w in caught) == 2
    assert outputs[1] == outputs[0]


def test_generate_max_time_as_transformers():
    """transformers' MaxTimeCriteria: every row stops once max_time seconds have passed (0: after one token)."""
    reference, model = build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))
    ids = torch.tensor(IDS)
    for options in ({"max_time": 0.0}, {"max_time": 0.0, "num_beams": 2}, {"max_time": 600.0}):
        expected, got = _both(reference, model, lambda generate, i, **o: generate(i, max_new_tokens=4, **o), ids,
                              **options)
        assert got.tolist() == expected.tolist()
        assert got.shape[1] == len(IDS[0]) + (4 if options["max_time"] else 1)
    model.generation_config.max_time = 0.0  # the config's, as transformers reads it
    assert model.generate(ml.tensor(IDS), max_new_tokens=4).shape[1] == len(IDS[0]) + 1


def test_generate_ignores_custom_config_entries_and_takes_logits_to_keep_as_transformers():
    from minilora.nn.generation import GenerationConfig
    reference, model = build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))
    reference.generation_config.update(allow_custom_entries=True, my_note=2)
    model.generation_config = GenerationConfig(max_new_tokens=3)
    model.generation_config.update(allow_custom_entries=True, my_note=2)
    ids = torch.tensor(IDS)
    for options in ({}, {"my_note": 5}, {"logits_to_keep": 1}, {"logits_to_keep": 0}):
        expected, got = _both(reference, model, lambda generate, i, **o: generate(i, max_new_tokens=3, **o), ids,
                              **options)
        assert got.tolist() == expected.tolist()
    for bad in ({"num_logits_to_keep": 1}, {"not_a_note": 1}):  # transformers 4's name is gone: a model_kwarg
        with pytest.raises(ValueError) as expected:
            reference.generate(ids, max_new_tokens=2, **bad)
        with pytest.raises(ValueError) as got:
            model.generate(ml.tensor(IDS), max_new_tokens=2, **bad)
        assert str(got.value) == str(expected.value)


def test_beam_search_applies_user_logits_processors_and_stopping_criteria_as_transformers():
    from minilora.nn import generation
    reference, model = build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))
    outputs = []
    for generate, tensor, module in ((reference.generate, torch.tensor, transformers),
                                     (model.generate, ml.tensor, generation)):
        boost, ends, at_length = _user_classes(module.LogitsProcessor, module.StoppingCriteria)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outputs.append(generate(tensor([[1, 5, 9, 13, 7], [1, 22, 3, 40, 8]]), max_new_tokens=8, num_beams=3,
                                    return_dict_in_generate=True, output_scores=True,
                                    logits_processor=module.LogitsProcessorList([boost()]),
                                    stopping_criteria=module.StoppingCriteriaList([ends(), at_length()])))
    expected, got = outputs
    _same_output(expected, got)
    assert len(got.scores) < 8 and got.beam_indices.tolist() == expected.beam_indices.tolist()
    np.testing.assert_allclose(got.sequences_scores.numpy(), expected.sequences_scores.numpy(), atol=1e-5)


@pytest.mark.parametrize("options", [dict(do_sample=True, temperature=0.0), dict(do_sample=True, temperature=-1.0),
                                     dict(do_sample=True, temperature=2), dict(do_sample=True, temperature=0),
                                     dict(max_new_tokens=0), dict(max_new_tokens=-1)])
def test_generate_refuses_in_transformers_words(options):
    reference, model = build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))
    options = {"max_new_tokens": 2, **options}
    with pytest.raises(ValueError) as expected:
        reference.generate(torch.tensor(IDS), **options)
    with pytest.raises(ValueError) as got:
        model.generate(ml.tensor(IDS), **options)
    assert str(got.value) == str(expected.value)
