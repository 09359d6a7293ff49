"""Every field of transformers 5.25's ``GenerationConfig()`` set the three ways its users set it -- a generate()
keyword, ``generation_config=GenerationConfig(...)``, ``model.generation_config.<field> = ...`` -- on
transformers' tiny LlamaForCausalLM and on minilora's with the same float32 weights and the same seed: the tokens
are the same, the scores and raw logits within 2e-5 (a 2-layer float32 model whose matmuls sum in another order
than torch's; the largest difference seen is 7e-6), and where transformers raises, minilora raises the same
error type with the same words. ``FIELDS`` must name every field, so a field transformers adds is noticed.

Before this round minilora differed silently for ``eos_token_id=None`` / ``pad_token_id=None`` set on purpose
(transformers clears the id: no eos, pad with the eos id; minilora fell back to the model config's ids),
``is_assistant=True`` (transformers adds its ConfidenceCriteria); refused with its own NotImplementedError what
transformers takes (``remove_invalid_values``, ``encoder_no_repeat_ngram_size``, ``bos_token_id=``,
``cache_config``, ``max_cache_len``, ``penalty_alpha`` while sampling, ``num_beam_groups`` without beams,
``dola_layers`` or ``use_mtp`` with beams, ``speculation_type`` without an assistant) and refused in other words
than transformers' (the methods transformers 5 moved to the Hub: its "requires `trust_remote_code=True`"
ValueError; ``use_mtp``, ``token_healing``, ``assistant_early_exit``, a too short ``max_length``, greedy
``num_return_sequences``); beam search broke ties (a forced eos list) by the lower id, not in torch.topk's order.

The second half does the same for ``LlamaConfig``'s fields (models drawn from one seed: the same weights, the
same logits; ``hidden_act`` other than silu was refused) and ``from_pretrained``'s keywords (``tie_word_embeddings``
over a file with its own head was tied -- other logits, silently --; ``use_safetensors``, ``revision``,
``ignore_mismatched_sizes``, ``from_tf`` and an unknown ``attn_implementation`` did not answer as transformers).
"""
import copy
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
from minilora.models import LlamaConfig, LlamaForCausalLM  # noqa: E402
from minilora.nn.generation import GenerationConfig  # noqa: E402

from test_llama import hf_model  # noqa: E402

PROMPT = [[5, 9, 3, 17, 22], [7, 7, 4, 12, 30]]
SCORE_TOLERANCE = 2e-5  # see the module docstring
OUTPUTS = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)
MODES = {"greedy": {}, "sample": {"do_sample": True}, "beam": {"num_beams": 2}}

# field: (value, mode, other options of the case); every field of GenerationConfig().to_dict()
FIELDS = {
    "max_length": (12, "greedy", {}), "max_new_tokens": (4, "beam", {}), "min_length": (13, "sample", {}),
    "min_new_tokens": (6, "greedy", {"eos_token_id": 8}), "early_stopping": (True, "beam", {}),
    "max_time": (100.0, "greedy", {}), "stop_strings": ("x", "greedy", {}), "do_sample": (True, "greedy", {}),
    "num_beams": (2, "greedy", {}), "use_mtp": (True, "greedy", {}), "use_cache": (False, "beam", {}),
    "cache_implementation": ("static", "sample", {}), "cache_config": ({"max_cache_len": 40}, "greedy", {}),
    "max_cache_len": (40, "greedy", {}), "temperature": (0.7, "sample", {}), "top_k": (5, "sample", {}),
    "top_p": (0.8, "sample", {}), "min_p": (0.1, "sample", {}), "top_h": (0.5, "sample", {}),
    "typical_p": (0.8, "sample", {}), "epsilon_cutoff": (0.03, "sample", {}), "eta_cutoff": (0.03, "sample", {}),
    "repetition_penalty": (1.5, "beam", {}), "encoder_repetition_penalty": (1.3, "greedy", {}),
    "length_penalty": (0.5, "beam", {}), "no_repeat_ngram_size": (2, "sample", {}),
    "bad_words_ids": ([[3], [4, 5]], "greedy", {}), "renormalize_logits": (True, "sample", {}),
    "forced_bos_token_id": (7, "greedy", {}), "forced_eos_token_id": ([9, 10], "beam", {}),
    "remove_invalid_values": (True, "greedy", {"forced_eos_token_id": 9}),  # (-inf: float32's lowest)
    "exponential_decay_length_penalty": ((2, 1.5), "sample", {"eos_token_id": 8}),
    "suppress_tokens": ([3, 4], "beam", {}), "begin_suppress_tokens": ([29, 21], "greedy", {}),
    "sequence_bias": ({(3,): 5.0, (5, 9): -3.0}, "greedy", {}), "token_healing": (True, "greedy", {}),
    "guidance_scale": (1.5, "greedy", {}), "watermarking_config": ({"greenlist_ratio": 0.5}, "sample", {}),
    "num_return_sequences": (2, "sample", {}), "output_attentions": (True, "greedy", {}),
    "output_hidden_states": (True, "sample", {}), "output_scores": (True, "beam", {}),
    "output_logits": (True, "sample", {}), "return_dict_in_generate": (True, "greedy", {}),
    "pad_token_id": (None, "greedy", {"eos_token_id": 8}), "bos_token_id": (4, "greedy", {}),
    "eos_token_id": (None, "sample", {}),  # (None on purpose: no eos, in transformers 5)
    "encoder_no_repeat_ngram_size": (2, "sample", {"num_return_sequences": 2}),
    "decoder_start_token_id": (3, "greedy", {}), "is_assistant": (True, "greedy", {}),
    "num_assistant_tokens": (3, "greedy", {}), "num_assistant_tokens_schedule": ("constant", "greedy", {}),
    "assistant_confidence_threshold": (0.2, "sample", {}), "prompt_lookup_num_tokens": (3, "greedy", {}),
    "max_matching_ngram_size": (2, "greedy", {}), "assistant_early_exit": (1, "sample", {}),
    "assistant_lookbehind": (5, "greedy", {}), "target_lookbehind": (5, "greedy", {}),
    "assistant_ensemble_weight": (0.5, "greedy", {}), "speculation_type": ("dflash", "greedy", {}),
    "compile_config": (None, "greedy", {}), "disable_compile": (True, "greedy", {}),
    "continuous_batching_config": (None, "greedy", {}), "low_memory": (True, "beam", {}),
    "penalty_alpha": (0.6, "greedy", {}), "dola_layers": ("low", "beam", {}), "diversity_penalty": (0.5, "beam", {}),
    "num_beam_groups": (3, "sample", {}), "constraints": (None, "greedy", {"force_words_ids": [[3]]}),
    "force_words_ids": ([[3]], "beam", {}), "prefill_chunk_size": (2, "greedy", {}),
    "_from_model_config": (True, "greedy", {}), "transformers_version": ("5.25.0", "greedy", {}),
}
# Other values of a field, and combinations, where minilora once differed (id: (mode, options)).
MORE = {
    "max_length shorter than the prompt": ("greedy", dict(max_length=3)),
    "greedy num_return_sequences": ("greedy", dict(num_return_sequences=2)),
    "penalty_alpha: contrastive search only when greedy with top_k > 1": ("greedy", dict(penalty_alpha=0.6, top_k=1)),
    "penalty_alpha while sampling": ("sample", dict(penalty_alpha=0.6)),
    "dola_layers while sampling": ("sample", dict(dola_layers="high")),
    "num_beam_groups with beams": ("beam", dict(num_beam_groups=3, diversity_penalty=0.5)),
    "use_mtp with beams": ("beam", dict(use_mtp=True)),
    "assistant_early_exit with beams": ("beam", dict(assistant_early_exit=1)),
    "eos_token_id None with pad_token_id None": ("sample", dict(eos_token_id=None, pad_token_id=None,
                                                               max_new_tokens=10)),
    "eos_token_id as a list": ("beam", dict(eos_token_id=[8, 7])),
    "remove_invalid_values with beams": ("beam", dict(remove_invalid_values=True, forced_eos_token_id=9)),
    "encoder_no_repeat_ngram_size 1": ("greedy", dict(encoder_no_repeat_ngram_size=1)),
    "encoder_no_repeat_ngram_size with beams": ("beam", dict(encoder_no_repeat_ngram_size=2)),
    "temperature 0 while sampling": ("sample", dict(temperature=0.0)),
    "min_new_tokens with min_length": ("greedy", dict(min_new_tokens=3, min_length=12, eos_token_id=8)),
    "max_new_tokens wins over max_length": ("sample", dict(max_new_tokens=3, max_length=12)),
    "speculation_type without an assistant": ("greedy", dict(speculation_type="dflash")),
}


def _config(**changes):
    return LlamaConfig(**{**dict(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 pad_token_id=0, bos_token_id=1, eos_token_id=2), **changes})


@pytest.fixture(scope="module")
def models():
    """{"hf": transformers' model, "ml": minilora's}, the same float32 weights."""
    reference = hf_model(transformers, _config(), dtype="float32", seed=0).eval()
    reference.set_attn_implementation("sdpa")
    model = LlamaForCausalLM(_config(), dtype="float32")
    model.load_state_dict({k: v.numpy(force=True) for k, v in reference.state_dict().items()})
    return {"hf": reference, "ml": model}


def _generate(model, library, spelling, options, prompt=PROMPT, **call):
    """``model.generate`` with ``options`` set the ``spelling`` way (``call``: keywords either way): the answer
    or the exception. The model's generation_config is put back afterwards."""
    saved = copy.deepcopy(model.generation_config)
    torch.manual_seed(0)
    ml.manual_seed(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if spelling == "keyword":
                call.update(options)
            elif spelling == "config":
                call["generation_config"] = (transformers.GenerationConfig if library == "hf" else
                                             GenerationConfig)(**options)
            else:
                for name, value in options.items():
                    setattr(model.generation_config, name, value)
            with torch.no_grad():
                return model.generate(torch.tensor(prompt) if library == "hf" else np.array(prompt), **call)
    except Exception as exc:  # noqa: BLE001 -- compared: both libraries must raise alike
        return exc
    finally:
        model.generation_config = saved


def _same(theirs, ours):
    if isinstance(theirs, Exception):
        assert type(ours) is type(theirs) and str(ours)[:100] == str(theirs)[:100], (theirs, ours)
        return
    assert not isinstance(ours, Exception), (theirs, ours)
    assert ours.sequences.tolist() == theirs.sequences.tolist()
    for name in ("scores", "logits"):
        assert len(getattr(ours, name)) == len(getattr(theirs, name))
        for a, b in zip(getattr(ours, name), getattr(theirs, name)):
            a, b = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
            assert (np.isinf(a) == np.isinf(b)).all()
            np.testing.assert_allclose(np.where(np.isinf(a), 0, a), np.where(np.isinf(b), 0, b),
                                       atol=SCORE_TOLERANCE, rtol=1e-6)  # (rtol: float32's largest, ~3.4e38)


def _both(models, spelling, mode, options):
    call = dict(OUTPUTS, max_new_tokens=3)
    if "max_length" in options or "max_new_tokens" in options:
        call.pop("max_new_tokens")
    if spelling != "keyword":  # (the call's keywords would win over the config's)
        call = {name: value for name, value in call.items() if name not in options}
    options = {**MODES[mode], **options}
    theirs, ours = (_generate(models[library], library, spelling, options, **call) for library in ("hf", "ml"))
    _same(theirs, ours)
    return theirs, ours


def test_every_generation_config_field_is_surveyed():
    assert set(transformers.GenerationConfig().to_dict()) == set(FIELDS)


@pytest.mark.parametrize("spelling", ["keyword", "config", "attribute"])
@pytest.mark.parametrize("field", sorted(FIELDS))
def test_each_field_as_transformers(models, field, spelling):
    value, mode, others = FIELDS[field]
    _both(models, spelling, mode, {field: value, **others})


@pytest.mark.parametrize("case", sorted(MORE))
def test_other_values_and_combinations_as_transformers(models, case):
    mode, options = MORE[case]
    _both(models, "keyword", mode, options)


def test_refusals_name_what_minilora_does_not_do(models):
    """What transformers would do and minilora cannot: a NotImplementedError naming it, never another answer."""
    model = models["ml"]
    cases = [(dict(penalty_alpha=0.6, trust_remote_code=True), "Contrastive Search"),  # (transformers: the Hub)
             (dict(num_beams=2, num_beam_groups=2, trust_remote_code=True), "Group Beam Search"),
             (dict(dola_layers="low", trust_remote_code=True), "Dola Generation"),
             (dict(force_words_ids=[[3]], trust_remote_code=True), "Constrained Beam Search"),
             (dict(token_healing=True, tokenizer=object()), "token_healing")]
    for options, name in cases:
        with pytest.raises(NotImplementedError, match=name):
            model.generate(np.array(PROMPT), max_new_tokens=2, **options)
    with pytest.raises(NotImplementedError, match="assistant_early_exit"):  # (transformers: one prompt only)
        model.generate(np.array(PROMPT[:1]), max_new_tokens=2, assistant_early_exit=1)
    with pytest.raises(NotImplementedError, match="dflash"):
        model.generate(np.array(PROMPT[:1]), max_new_tokens=2, assistant_model=model, speculation_type="dflash")


def test_is_assistant_stops_on_low_confidence_and_fails_without_scores_as_transformers(models):
    """transformers' ConfidenceCriteria reads the scores output: without it both fail alike (a TypeError)."""
    theirs, ours = _both(models, "attribute", "greedy", dict(is_assistant=True, assistant_confidence_threshold=0.3))
    assert ours.sequences.shape[1] < len(PROMPT[0]) + 3  # (it stopped early)
    results = [_generate(models[library], library, "attribute", dict(is_assistant=True), max_new_tokens=4)
               for library in ("hf", "ml")]
    assert all(isinstance(result, TypeError) for result in results), results


def test_no_prompt_starts_from_bos_token_id_as_transformers(models):
    """``bos_token_id=`` (a generate keyword transformers takes; minilora called it a typo) starts a row."""
    results = []
    for library in ("hf", "ml"):
        model = models[library]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results.append(model.generate(bos_token_id=4, max_new_tokens=5).tolist())
    assert results[0] == results[1] and results[0][0][0] == 4


def test_pad_token_id_none_warns_as_transformers(models):
    """A batch without attention_mask and no pad id: transformers' warning (then it pads with the eos id)."""
    with pytest.warns(UserWarning, match="The attention mask and the pad token id were not set"):
        models["ml"].generate(np.array(PROMPT), max_new_tokens=2, pad_token_id=None)


def test_float64_scores_as_transformers():
    """float64 twins: the processed scores of the rarer processors agree to float64's rounding."""
    reference = hf_model(transformers, _config(), dtype="float64", seed=1).eval()
    model = LlamaForCausalLM(_config(), dtype="float64")
    model.load_state_dict({k: v.numpy(force=True) for k, v in reference.state_dict().items()})
    options = dict(OUTPUTS, max_new_tokens=5, encoder_no_repeat_ngram_size=2, remove_invalid_values=True,
                   exponential_decay_length_penalty=(1, 1.2), eos_token_id=[8, 7], renormalize_logits=True)
    theirs = _generate(reference, "hf", "keyword", options)
    ours = _generate(model, "ml", "keyword", options)
    assert ours.sequences.tolist() == theirs.sequences.tolist()
    for a, b in zip(ours.scores, theirs.scores):
        a, b = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)  # (scores are float32 in both: one rounding)


# ==================================================================================================
# LlamaConfig field by field, and from_pretrained's keywords, as transformers 5.25 users pass them
# ==================================================================================================
# field: a value a user sets (every field of LlamaConfig().to_dict()); the models are drawn from the same seed
# in float32 (transformers' _init_weights: the same numbers), then run on the same weights
CONFIG_FIELDS = {
    "architectures": ["LlamaForCausalLM"], "output_hidden_states": True, "return_dict": True, "dtype": "float32",
    "chunk_size_feed_forward": 2, "is_encoder_decoder": False, "id2label": {0: "a", 1: "b", 2: "c"},
    "label2id": {"a": 0}, "problem_type": "regression", "vocab_size": 50, "hidden_size": 24, "intermediate_size": 7,
    "num_hidden_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 1, "hidden_act": "gelu",
    "max_position_embeddings": 4, "initializer_range": 0.5, "rms_norm_eps": 1e-2, "use_cache": False,
    "pad_token_id": 36, "bos_token_id": None, "eos_token_id": [2, 3], "pretraining_tp": 2, "tie_word_embeddings": True,
    "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 16, "rope_theta": 10000.0},
    "attention_bias": True, "attention_dropout": 0.1, "mlp_bias": True, "head_dim": 2, "_name_or_path": "x",
    "model_type": "llama", "output_attentions": True, "transformers_version": "5.25.0"}
ACTIVATIONS = ["gelu_pytorch_tanh", "gelu_new", "quick_gelu", "relu2", "leaky_relu", "mish", "linear"]  # (+ gelu)
FORWARD_TOLERANCE = 1e-4  # float32 logits of models whose matmuls sum in another order (largest seen: 2e-6)


def _drawn_twins(**changes):
    """transformers' and minilora's float32 Llama drawn from seed 0 (transformers' init), on its weights."""
    config = dict(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config.update(changes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
        ml.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**config), dtype="float32").eval()
    return reference, model


def _logits(model, ids):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        logits = model(torch.tensor(ids) if isinstance(model, torch.nn.Module) else np.array(ids)).logits
    return np.asarray(logits.numpy(), dtype=np.float64)


def test_every_llama_config_field_is_surveyed():
    assert set(transformers.LlamaConfig().to_dict()) == set(CONFIG_FIELDS)


@pytest.mark.parametrize("changes", [{name: value} for name, value in sorted(CONFIG_FIELDS.items())
                                     if name != "transformers_version"] +
                         [{"hidden_act": name} for name in ACTIVATIONS], ids=str)
def test_each_llama_config_field_draws_and_computes_as_transformers(changes):
    """hidden_act other than silu was refused ("Llama uses hidden_act='silu'"); transformers computes
    ACT2FN[hidden_act](gate) * up. The rest agreed already and stays so."""
    reference, model = _drawn_twins(**changes)
    theirs = {name: value.numpy() for name, value in reference.state_dict().items()}
    ours = {name: value.numpy() for name, value in model.state_dict().items()}
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    for ids in ([[5, 9, 3, 17, 22, 30, 1, 8]], [[5, 9, 3] * 8]):  # (the second runs past 4 positions)
        np.testing.assert_allclose(_logits(model, ids), _logits(reference, ids), atol=FORWARD_TOLERANCE)


def test_activations_transformers_has_and_minilora_lacks_are_refused_by_name():
    with pytest.raises(NotImplementedError, match="hidden_act='gelu_fast'"):
        _drawn_twins(hidden_act="gelu_fast")
    with pytest.raises(KeyError):  # (transformers' ACT2FN KeyError for a name it does not know either)
        _drawn_twins(hidden_act="no_such_activation")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Checkpoint folders transformers wrote: safetensors; torch.save's .bin only; a vocabulary of 40."""
    root = tmp_path_factory.mktemp("folders")
    reference = hf_model(transformers, _config(), dtype="float32", seed=2)
    reference.save_pretrained(root / "safetensors")
    reference.save_pretrained(root / "bin")
    (root / "bin" / "model.safetensors").unlink()
    torch.save(reference.state_dict(), root / "bin" / "pytorch_model.bin")
    hf_model(transformers, _config(vocab_size=40), dtype="float32", seed=3).save_pretrained(root / "vocab40")
    return {path.name: str(path) for path in root.iterdir()}


LOADING = {  # id: (folder, keywords)
    "tie_word_embeddings over an untied file": ("safetensors", dict(tie_word_embeddings=True)),
    "use_safetensors=True": ("safetensors", dict(use_safetensors=True)),
    "use_safetensors=True without the file": ("bin", dict(use_safetensors=True)),
    "use_safetensors=False": ("bin", dict(use_safetensors=False)),
    "use_safetensors=False without the .bin": ("safetensors", dict(use_safetensors=False)),
    "revision of a local folder": ("safetensors", dict(revision="v2")),
    "attn_implementation unknown": ("safetensors", dict(attn_implementation="bogus")),
    "ignore_mismatched_sizes, nothing mismatched": ("safetensors", dict(ignore_mismatched_sizes=True)),
    "ignore_mismatched_sizes, the vocabulary": ("vocab40", dict(vocab_size=37, ignore_mismatched_sizes=True)),
    "a mismatched vocabulary": ("vocab40", dict(vocab_size=37)),
    "from_tf (unused in transformers 5)": ("safetensors", dict(from_tf=True)),
    "hidden_act override": ("safetensors", dict(hidden_act="gelu_pytorch_tanh")),
}


@pytest.mark.parametrize("case", sorted(LOADING))
def test_from_pretrained_keywords_as_transformers(folders, case):
    """The same model (weights, redrawn rows, the global stream after), logits and loading info -- or the same
    error type. minilora had tied the head to the embeddings when transformers keeps a file's own head (other
    logits, silently), refused use_safetensors=False, revision, ignore_mismatched_sizes and from_tf, and read a
    .bin under use_safetensors=True."""
    folder, options = LOADING[case]
    results = []
    for library, load in (("hf", transformers.LlamaForCausalLM.from_pretrained),
                          ("ml", LlamaForCausalLM.from_pretrained)):
        torch.manual_seed(5)
        ml.manual_seed(5)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model, info = load(folders[folder], output_loading_info=True, **options)
            results.append((model, info, float(torch.randn(()) if library == "hf" else ml.randn(()))))
        except Exception as exc:  # noqa: BLE001 -- compared: both must raise alike
            results.append(exc)
    theirs, ours = results
    if isinstance(theirs, Exception):
        assert isinstance(ours, RuntimeError if isinstance(theirs, RuntimeError) else type(theirs)), (theirs, ours)
        return
    assert not isinstance(ours, Exception), ours
    weights = {name: value.numpy() for name, value in ours[0].state_dict().items()}
    assert all(np.array_equal(value.numpy(force=True), weights[name])
               for name, value in theirs[0].state_dict().items())
    assert ours[2] == theirs[2]  # (the draws after: the same stream)
    assert _plain(ours[1]) == _plain(theirs[1])
    np.testing.assert_allclose(_logits(ours[0], PROMPT), _logits(theirs[0], PROMPT), atol=FORWARD_TOLERANCE)


def _plain(info):
    """A loading report with each mismatched key's shapes as tuples (torch.Size / minilora.Size alike)."""
    return {name: {(key[0], tuple(key[1]), tuple(key[2])) if isinstance(key, tuple) else key for key in keys}
            for name, keys in info.items()}


def test_use_safetensors_false_with_both_files_reads_the_bin(folders, tmp_path):
    """A folder holding both formats, of other weights: use_safetensors=False reads torch.save's .bin, as
    transformers does (minilora refused it by name before round 15); unset, the safetensors file."""
    import shutil
    shutil.copytree(folders["bin"], tmp_path, dirs_exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_model(transformers, _config(), dtype="float32", seed=5).save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", tmp_path)
    for options in (dict(use_safetensors=False), {}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path), **options)
        ours = LlamaForCausalLM.from_pretrained(str(tmp_path), **options)
        np.testing.assert_allclose(_logits(ours, PROMPT), _logits(theirs, PROMPT), atol=FORWARD_TOLERANCE)
    assert not np.allclose(_logits(ours, PROMPT), _logits(LlamaForCausalLM.from_pretrained(
        str(tmp_path), use_safetensors=False), PROMPT), atol=FORWARD_TOLERANCE)  # (the two files differ)


RIGHT_PADDED = "A decoder-only architecture is being used, but right-padding was detected!"
NO_MASK_NO_PAD = "The attention mask and the pad token id were not set, with a batched input."
PAD_IS_EOS = "The attention mask is not set with a batched input, and cannot be inferred from input because pad"
PADDING_WARNINGS = [  # (prompt, keywords, transformers' warnings: its logger's, seen once each in a fresh process)
    ([[3, 7, 1], [3, 7, 0]], dict(attention_mask=[[1, 1, 1], [1, 1, 0]]), [RIGHT_PADDED]),
    ([[3, 7, 1], [3, 7, 0]], {}, [RIGHT_PADDED]),  # (no mask: the last id is the pad id)
    ([[3, 7, 2], [3, 7, 5]], dict(pad_token_id=None), [NO_MASK_NO_PAD, PAD_IS_EOS, RIGHT_PADDED]),
    ([[0, 7, 1], [3, 7, 5]], {}, []), ([[3, 7, 0]], {}, []),  # (left padding; one row)
    ([[3, 7, 1], [3, 7, 0]], dict(attention_mask=[[1, 1, 1], [1, 1, 1]]), []),  # (the mask says: no padding)
]


@pytest.mark.parametrize("prompt, options, expected", PADDING_WARNINGS)
def test_padding_warnings_and_tokens_as_transformers(models, prompt, options, expected):
    """minilora warned about right padding in its own words, for one row too, and never when the ids end with the
    pad id and no mask is given; about a missing pad id, never."""
    results = []
    for library in ("hf", "ml"):
        wrap = torch.tensor if library == "hf" else np.array
        call = {name: wrap(value) if name == "attention_mask" else value for name, value in options.items()}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.no_grad():
                results.append(models[library].generate(wrap(prompt), max_new_tokens=3, **call).tolist())
    assert results[0] == results[1]
    known = (RIGHT_PADDED, NO_MASK_NO_PAD, PAD_IS_EOS)
    seen = [next(start for start in known if str(w.message).startswith(start)) for w in caught
            if str(w.message).startswith(known)]
    assert seen == expected and not any("right-padding" in str(w.message) and RIGHT_PADDED not in str(w.message)
                                        for w in caught)
