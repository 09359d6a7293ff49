"""PEFT 0.21 and transformers 5 users' calls that round 10 left refused or answered differently, run once per
library on the same weights (torch's copied into minilora's, adapters drawn from the same seed):

* DoRA on a float16/bfloat16 Conv1d/Conv2d (PEFT's DoraConv2dLayer rounds B A, s * B A, the sum and the
  norm to 16 bits while the adapter still has the base's dtype): refused;
* ``modules_to_save`` naming a module the model does not have (PEFT skips it without a word): refused;
* ``get_peft_model`` twice on one base model with the same adapter name: PEFT's second tuner shares the
  first's ``peft_config`` dict (left on the base model) and replaces the adapter in the layers, so both
  PeftModels run the new one; minilora warned as PEFT, then refused;
* ``peft.helpers.rescale_adapter_scale`` (wise-ft: every LoRA scaling times a multiplier inside a ``with``
  block) and ``check_if_peft_model``: no such module;
* transformers' ``generate(input_ids=..., inputs_embeds=...)`` with ids of another length than the embeddings
  (the model runs the embeddings, the new tokens follow the ids; ``max_length`` / ``min_length`` then count
  both lengths, as its _prepare_generated_length): refused;
* beam sampling, ``generate(num_beams=..., do_sample=True)`` (the candidates drawn without replacement from the
  softmax of the beams' summed scores; top-k / top-p keep one token more than the eos ids): refused;
* ``generate(do_sample=True, top_h=...)``, transformers 5's Top-H sampling: refused;
* ``DataCollatorForLanguageModeling(whole_word_mask=True)`` (transformers 5's spelling of the removed
  DataCollatorForWholeWordMask: words found from the offset mapping, a word's first token drawn, the whole
  word masked): refused.

Left as it is: a float64 Llama's loss. transformers' ForCausalLMLoss computes it on ``logits.float()``, a
float32 loss of float32-rounded logits; minilora keeps a float64 model float64 throughout (its RMSNorm and
RoPE tables too, where transformers computes them in float32), so its loss is the float64 truth the gradient
checks need (documented in ``minilora.nn.llama.causal_lm_loss``; tests/test_llama.py checks it).

Skipped when torch / peft / transformers are not installed."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
import minilora.data as ml_data  # noqa: E402
import minilora.lora as ml_peft  # noqa: E402
from minilora import models  # noqa: E402

from test_peft_custom_r6 import INPUTS, cnn, mlp, pair, run_both  # noqa: E402
from test_hf_offpath_r10 import TINY, _both, _same_output, build, masking_tokenizers  # noqa: E402,F401
from test_hf_tutorials_r9 import TEXTS, plain  # noqa: E402
from test_peft_offpath_r10 import assert_same_states, outputs, pair16, seeded  # noqa: E402


# ==================================================================================================
# PEFT: DoRA on a 16-bit convolution
# ==================================================================================================
@pytest.mark.parametrize("autocast", [True, False])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_dora_on_a_16_bit_conv_bit_for_bit_as_peft(dtype, autocast):
    """Before: NotImplementedError. The magnitudes, the forward (float32 or 16-bit adapters), the merged and
    the unmerged weights are PEFT's bit for bit."""
    config = dict(r=2, target_modules=["conv1", "conv2", "temporal"], use_dora=True, init_lora_weights=False)
    theirs, ours = seeded(*pair16(cnn, dtype), config, autocast_adapter_dtype=autocast)
    assert_same_states(theirs, ours)
    x = INPUTS[cnn](np.random.default_rng(1)).astype(np.float32)
    np.testing.assert_array_equal(*outputs(theirs, ours, x, dtype))
    for step in ("merge_adapter", "unmerge_adapter"):
        with torch.no_grad():
            getattr(theirs, step)()
        getattr(ours, step)()
        assert_same_states(theirs, ours)


# ==================================================================================================
# PEFT: modules_to_save naming nothing; get_peft_model twice on one base
# ==================================================================================================
def trainable_shapes(model):
    return [(n, tuple(p.shape)) for n, p in model.named_parameters() if p.requires_grad]


def test_modules_to_save_naming_no_module_is_skipped_as_peft(tmp_path):
    """Before: ValueError("modules_to_save entry 'lm_head' matches no module of the model") (a config shared
    with a model that has no such head)."""
    config = dict(r=2, target_modules=["seq.0"], modules_to_save=["lm_head", "seq.4"], init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PEFT says nothing about it
        theirs, ours = seeded(*pair(mlp), config)
    assert trainable_shapes(ours) == trainable_shapes(theirs)
    assert ours.modules_to_save == theirs.modules_to_save == {"lm_head", "seq.4"}
    assert_same_states(theirs, ours)
    ours.save_pretrained(str(tmp_path))
    loaded = peft.PeftModel.from_pretrained(pair(mlp)[0], str(tmp_path))  # PEFT reads minilora's folder
    x = INPUTS[mlp](np.random.default_rng(2))
    np.testing.assert_allclose(*run_both(loaded, ours, x), rtol=0, atol=1e-13)  # (float64: one fused op here)


def test_get_peft_model_twice_replaces_the_adapter_in_both_models_as_peft():
    """Before: the warning, then ValueError("this model already has an adapter named 'default' ...")."""
    bases = pair(mlp)
    first = dict(r=2, target_modules=["seq.0"], init_lora_weights=False)
    second = dict(r=3, target_modules=["seq.0", "seq.2"], init_lora_weights=False)
    models, messages = [], []
    for library, lib_peft, base in ((torch, peft, bases[0]), (ml, ml_peft, bases[1])):
        library.manual_seed(1)
        one = lib_peft.get_peft_model(base, lib_peft.LoraConfig(**first))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            two = lib_peft.get_peft_model(base, lib_peft.LoraConfig(**second))
        models.append((one, two))
        messages.append([str(w.message) for w in caught])
    assert messages[1] == messages[0] and len(messages[0]) == 2
    (t1, t2), (m1, m2) = models
    for theirs, ours in ((t1, m1), (t2, m2)):
        assert trainable_shapes(ours) == trainable_shapes(theirs)
        assert {k: v.r for k, v in ours.peft_config.items()} == {k: v.r for k, v in theirs.peft_config.items()} \
            == {"default": 3}
        assert_same_states(theirs, ours)
        np.testing.assert_allclose(*run_both(theirs, ours, INPUTS[mlp](np.random.default_rng(3))), rtol=0, atol=1e-13)
    assert m1.peft_config is m2.peft_config and bases[1].peft_config is m1.peft_config  # where PEFT keeps it
    t2.unload(), m2.unload()
    assert not hasattr(bases[0], "peft_config") and not hasattr(bases[1], "peft_config")  # PEFT drops it there



def test_rescale_adapter_scale_and_check_if_peft_model_as_peft_helpers(tmp_path):
    """Before: ModuleNotFoundError (minilora.lora.helpers)."""
    import peft.helpers
    from minilora.lora import helpers
    config = dict(r=2, target_modules=["seq.0", "seq.2"], init_lora_weights=False)
    theirs, ours = seeded(*pair(mlp), config)
    for model, lib_peft in ((theirs, peft), (ours, ml_peft)):
        model.add_adapter("other", lib_peft.LoraConfig(**config))  # (inactive: its scaling is rescaled too)
    copy = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        copy[name]._array[...] = p.detach().numpy()  # "other"'s draws: copied, whatever the order
    x = INPUTS[mlp](np.random.default_rng(4))
    plain_output = run_both(theirs, ours, x)
    for multiplier in (0.5, 2, 0):
        with peft.helpers.rescale_adapter_scale(theirs, multiplier), helpers.rescale_adapter_scale(ours, multiplier):
            scaled = run_both(theirs, ours, x)
            assert ours.base_model.model.seq[0].scaling == theirs.base_model.model.seq[0].scaling
        np.testing.assert_allclose(*scaled, rtol=0, atol=1e-13)
        assert (multiplier == 1) == np.allclose(scaled[1], plain_output[1])
    np.testing.assert_array_equal(run_both(theirs, ours, x)[1], plain_output[1])  # the scalings are back
    for bad, error in (("0.5", TypeError), (None, TypeError)):
        with pytest.raises(error, match="multiplier should be of type float"):
            with helpers.rescale_adapter_scale(ours, bad):
                pass
    with pytest.raises(ValueError, match="only supported for models with `LoraLayer`s"):
        with helpers.rescale_adapter_scale(ml.nn.Linear(2, 2), 0.5):
            pass
    ours.save_pretrained(str(tmp_path))
    for folder in (tmp_path, tmp_path / "nowhere"):
        assert helpers.check_if_peft_model(str(folder)) == peft.helpers.check_if_peft_model(str(folder))

# ==================================================================================================
# transformers: generate with input_ids and inputs_embeds of different lengths
# ==================================================================================================
@pytest.mark.parametrize("options", [dict(max_new_tokens=4), dict(max_length=12),
                                     dict(max_length=14, min_length=13, eos_token_id=52),
                                     dict(max_new_tokens=3, num_beams=2)])
def test_generate_with_ids_and_embeddings_of_different_lengths_as_transformers(options):
    """Before: NotImplementedError("... pass ids for every embedded position or none"). Ids longer than the
    embeddings, and shorter ones with the embeddings' attention_mask (without it transformers infers a mask
    from the ids and fails in its forward; minilora uses the embeddings' length, what that mask would say)."""
    reference, model = build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))
    rng = np.random.default_rng(0)
    embeds = torch.tensor(rng.standard_normal((2, 4, TINY["hidden_size"])).astype(np.float32))
    for ids, mask in ((rng.integers(1, 64, (2, 6)), None), (rng.integers(1, 64, (2, 2)), np.ones((2, 4), np.int64))):
        tensors = (torch.tensor(ids), embeds) + (() if mask is None else (torch.tensor(mask),))
        expected, got = _both(reference, model, lambda generate, i, e, m=None, **o: generate(
            i, inputs_embeds=e, attention_mask=m, **o), *tensors, return_dict_in_generate=True, output_scores=True,
            **options)
        _same_output(expected, got)
        assert got.sequences.tolist()[0][:ids.shape[1]] == ids.tolist()[0]


@pytest.mark.parametrize("options", [dict(num_beams=3), dict(num_beams=2, top_k=1),
                                     dict(num_beams=3, top_p=0.5, temperature=0.7),
                                     dict(num_beams=3, num_return_sequences=2, eos_token_id=[52, 7], top_k=5),
                                     dict(num_beams=2, length_penalty=0.5, early_stopping=True, eos_token_id=52)])
def test_beam_sampling_as_transformers(options):
    """Before: NotImplementedError("generate(num_beams > 1, do_sample=True) (beam sampling) ..."). Sequences,
    per-step scores, beam indices and sequence scores from the same global seed, and the stream after it."""
    reference, model = build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))
    ids = torch.tensor([[1, 5, 9, 13, 7], [1, 22, 3, 40, 8]])
    for seed in (0, 3):
        expected, got = _both(reference, model, lambda generate, i, **o: generate(i, **o), ids, seed=seed,
                              do_sample=True, max_new_tokens=6, return_dict_in_generate=True, output_scores=True,
                              **options)
        _same_output(expected, got)
        assert got.beam_indices.tolist() == expected.beam_indices.tolist()
        np.testing.assert_allclose(got.sequences_scores.numpy(), expected.sequences_scores.numpy(), atol=1e-5)
        assert ml.rand(3).tolist() == torch.rand(3).tolist()  # as many draws as transformers made
    with pytest.raises(NotImplementedError, match="min_p"):
        model.generate(ml.tensor(ids.numpy()), num_beams=2, do_sample=True, min_p=0.1, max_new_tokens=2)


def test_top_h_sampling_as_transformers():
    """Before: NotImplementedError("generate(top_h=0.5) is not implemented in minilora"). The filter on random
    float32 scores (the kept tokens of every row; top_h=1 is left out: see top_h_filter), then generate."""
    from transformers.generation.logits_process import TopHLogitsWarper
    from minilora.nn.generation import top_h_filter
    rng = np.random.default_rng(0)
    for vocab, spread in ((64, 1.0), (64, 4.0), (300, 2.0)):
        scores = (rng.standard_normal((100, vocab)) * spread).astype(np.float32)
        scores[::3, :3] = -np.inf  # (tokens another processor banned)
        for top_h in (0.3, 0.6, 0.9):
            expected = TopHLogitsWarper(top_h)(None, torch.tensor(scores)).numpy()
            np.testing.assert_array_equal(top_h_filter(scores, top_h), expected)
    reference, model = build(transformers.LlamaConfig(**TINY), models.LlamaConfig(**TINY))
    ids = torch.tensor([[1, 5, 9, 13, 7], [1, 22, 3, 40, 8]])
    for options in (dict(top_h=0.5), dict(top_h=0.3, temperature=0.8, top_k=10), dict(top_h=0.6, num_beams=2)):
        _same_output(*_both(reference, model, lambda generate, i, **o: generate(i, **o), ids, seed=5, do_sample=True,
                            max_new_tokens=8, return_dict_in_generate=True, output_scores=True, **options))
    with pytest.raises(ValueError, match="must be in the range"):
        model.generate(ml.tensor(ids.numpy()), do_sample=True, top_h=1.5, max_new_tokens=2)

# ==================================================================================================
# transformers: the mlm collator's whole-word masking
# ==================================================================================================
@pytest.mark.parametrize("options", [{"seed": 3}, {}, {"mlm_probability": 0.5, "return_tensors": "np", "seed": 5},
                                     {"mlm_probability": 0.6, "mask_replace_prob": 1.0, "random_replace_prob": 0.0,
                                      "return_tensors": "np"}])
def test_whole_word_masking_as_transformers_bit_for_bit(masking_tokenizers, options):
    """Before: NotImplementedError. The masks (seeded or global generators, torch's or NumPy's), the
    warning that turns random replacement off, and the refusal without offsets."""
    theirs, ours = masking_tokenizers
    collators, said = [], []
    for library, tokenizer in ((transformers, theirs), (ml_data, ours)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            collators.append(library.DataCollatorForLanguageModeling(tokenizer, whole_word_mask=True, **options))
        said.append([str(w.message) for w in caught])
    assert said[1] == said[0]
    for batch in range(2):  # the seeded generator goes on from one batch to the next
        got = []
        for tokenizer, collate in zip((theirs, ours), collators):
            features = [dict(tokenizer(t, padding="max_length", max_length=12, return_offsets_mapping=True,
                                       return_special_tokens_mask=bool(batch))) for t in TEXTS * 3]
            torch.manual_seed(batch), ml.manual_seed(batch), np.random.seed(batch)
            got.append(plain(collate(features)))
        assert got[1] == got[0]
    labels = np.array(got[1]["labels"][1])  # (plain: (dtype, values))
    assert ((labels[:, :-1] != -100) & (labels[:, 1:] != -100)).any()  # a word of several tokens masked whole
    with pytest.raises(ValueError, match="return_offsets_mapping=True"):
        collators[1]([dict(ours(t, padding="max_length", max_length=12)) for t in TEXTS])
