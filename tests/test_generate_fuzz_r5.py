"""A seeded differential fuzzer for ``generate``: minilora's and transformers' on the same tiny Llama weights.

Each seed draws one call from the deterministic part of transformers' generation space and runs it in
both libraries: greedy decoding and beam search (``num_beams``, ``num_return_sequences``,
``length_penalty``, ``early_stopping`` True / False / "never"); the lengths (``max_new_tokens``,
``max_length``, ``min_new_tokens``, ``min_length``); ``eos_token_id`` as an int or a list, ``pad_token_id``;
the logits processors (``repetition_penalty``, ``encoder_repetition_penalty``, ``no_repeat_ngram_size``,
``bad_words_ids``, ``suppress_tokens``, ``begin_suppress_tokens``, ``forced_bos_token_id``,
``forced_eos_token_id``, ``sequence_bias``, ``exponential_decay_length_penalty``, ``renormalize_logits``);
``stop_strings`` with each library's tokenizer; ``return_dict_in_generate`` with ``output_scores`` /
``output_logits``; ``use_cache``; prompts of one row, of two rows, left-padded with or without an
``attention_mask``; the options as keywords or as a ``GenerationConfig`` object. Sampling is compared
where it is deterministic: ``top_k=1``, and the warped scores of a sampled step (``temperature``,
``top_k``, ``top_p``, ``min_p``, ``typical_p``, ``epsilon_cutoff``, ``eta_cutoff``; -inf positions and all).

Compared: the sequences token for token; ``scores``, ``logits`` and ``sequences_scores`` numerically (the
-inf positions exactly); ``beam_indices``; and where transformers raises, minilora raises too.

Left out on purpose: exact ties between candidates (a ``forced_eos_token_id`` list forces several tokens
to the same score; ``torch.topk`` orders ties as its kernel happens to, so only greedy decoding, whose
argmax takes the first, draws one; likewise beam search whose only new token is forced, where the
slots past the one real hypothesis tie at -1e9); 1-D prompts (minilora accepts them, transformers does not); group
beam search (``num_beam_groups``), which transformers 5 moved out of the library.

Stricter on purpose (minilora refuses, with the value named, what transformers silently leaves off):
a negative ``no_repeat_ngram_size``, ``min_new_tokens`` or ``min_length``. (``top_p`` / ``typical_p`` above 1
sample as 1.0 in both since round 7: test_generate_r7.py.)

The reference model uses SDPA attention: in float64, transformers' eager attention gives a left-padded
row NaN logits (its fully masked padding rows), which is its bug, not a reference.

REGRESSIONS -- divergences this fuzzer found (minimized; each has its own test below):

| user call                                   | transformers                       | minilora before            |
|---------------------------------------------|------------------------------------|----------------------------|
| pad_token_id=3 on [[0,0,5,9,3],...] (mask   | the masked last position is        | its position counted on    |
|  inferred: right padding), greedy or beams  |  position 0; new tokens follow it  |  (3, then 4...): other ids |
| min_new_tokens=2, min_length=6, prompt of 3 | min_new_tokens wins: eos allowed   | both applied: no eos until |
|  (also min_new_tokens=0 with min_length)    |  from length 5 (3 + 2)             |  length 6                  |
| forced_eos_token_id=33, suppress_tokens=[33]| ValueError (all -inf: nan)         | generated                  |
| forced_eos_token_id=22, begin_suppress=[22],| RuntimeError (multinomial of nan)  | drew token 0               |
|  do_sample=True, max_new_tokens=1           |                                    |                            |
| early_stopping="maybe"                      | ValueError                         | taken as False             |
| length_penalty / early_stopping with one    | "generation flags are not valid    | silent                     |
|  beam; output_scores / output_logits        |  and may be ignored" (logged)      |                            |
|  without return_dict_in_generate            |                                    |                            |
| num_beams=2, diversity_penalty=1.0 (no      | generates, the penalty unused      | NotImplementedError        |
|  num_beam_groups)                           |                                    |                            |
| encoder_repetition_penalty=0.0 or -1.0      | ValueError                         | (then unimplemented)       |
| typical_p / epsilon_cutoff / eta_cutoff,    | applied                            | NotImplementedError        |
|  encoder_repetition_penalty,                |                                    |                            |
|  renormalize_logits, forced_bos_token_id,   |                                    |                            |
|  exponential_decay_length_penalty           |                                    |                            |
"""
import os
import random
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
from minilora.models import LlamaConfig, LlamaForCausalLM  # noqa: E402
from minilora.tokenizer import ByteTokenizer  # noqa: E402

from test_llama import hf_model  # noqa: E402

VOCAB = 37
TINY = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                   pad_token_id=0, bos_token_id=1, eos_token_id=2)
PADDED = [[0, 0, 5, 9, 3], [4, 8, 6, 1, 13]]
PROMPTS = [([[5, 9, 3, 17, 22]], None), ([[7, 30, 11]], None), ([[6]], None),
           (PADDED, [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]), (PADDED, None), ([[12, 3, 3, 12], [20, 21, 22, 23]], None),
           (None, None)]  # no prompt: both start from the bos token
# byte-tokenizer texts of ids below VOCAB: control characters and " !\"#$"
STOP_STRINGS = ["\x0c", "! ", ["\x03\x0c", "\x21"], "\x0c\x03", ["$", "#"]]
SAMPLING_FILTERS = {"temperature": [0.5, 1.0, 1.7], "top_k": [0, 3, 10, 50], "top_p": [0.3, 0.8, 1.0],
                    "min_p": [0.05, 0.2], "typical_p": [0.5, 0.9], "epsilon_cutoff": [3e-2, 1e-3],
                    "eta_cutoff": [1e-2, 1e-3]}
SEEDS = range(int(os.environ.get("MINILORA_FUZZ_SEEDS", "70")))  # MINILORA_FUZZ_SEEDS=1500: a longer hunt


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers' model, minilora's model, transformers' tokenizer, minilora's): the same weights, the
    same byte tokenizer."""
    reference = hf_model(transformers, TINY, dtype="float64").eval()
    reference.set_attn_implementation("sdpa")  # see the module docstring: eager gives padded rows NaN
    model = LlamaForCausalLM(TINY, dtype="float64")
    model.load_state_dict({k: v.numpy(force=True) for k, v in reference.state_dict().items()})
    folder = str(tmp_path_factory.mktemp("byte_tokenizer"))
    ByteTokenizer().save_pretrained(folder)
    return reference, model, transformers.AutoTokenizer.from_pretrained(folder), ml.tokenizer.from_pretrained(folder)


def some_ids(r, most=3):
    return [r.randrange(VOCAB) for _ in range(r.randint(1, most))]


def draw_lengths_and_ids(r, prompt_length, options):
    if r.random() < 0.85:
        options["max_new_tokens"] = r.randint(1, 9)
    else:
        options["max_length"] = prompt_length + r.randint(1, 8)
    if r.random() < 0.25:
        options["min_new_tokens"] = r.randint(0, 5)
    if r.random() < 0.15:
        options["min_length"] = r.randint(0, 10)
    if r.random() < 0.5:
        options["eos_token_id"] = r.choice([r.randrange(VOCAB), some_ids(r), 2])
    if r.random() < 0.3:
        options["pad_token_id"] = r.choice([0, 3, 36])


def draw_processors(r, options, greedy):
    draws = {
        "repetition_penalty": lambda: r.choice([0.7, 1.0, 1.3, 2.0]),
        "encoder_repetition_penalty": lambda: r.choice([0.8, 1.5]),
        "no_repeat_ngram_size": lambda: r.randint(1, 3),
        "bad_words_ids": lambda: [some_ids(r, 2) for _ in range(r.randint(1, 3))],
        "suppress_tokens": lambda: some_ids(r, 4),
        "begin_suppress_tokens": lambda: some_ids(r),
        "forced_bos_token_id": lambda: r.randrange(VOCAB),
        # several forced ids tie: only greedy's argmax breaks ties as transformers does (module docstring)
        "forced_eos_token_id": lambda: some_ids(r, 2) if greedy and r.random() < 0.5 else r.randrange(VOCAB),
        "sequence_bias": lambda: {tuple(some_ids(r, 2)): r.choice([-3.0, 2.5, 10.0]) for _ in range(r.randint(1, 3))},
        "exponential_decay_length_penalty": lambda: (r.randint(0, 4), r.choice([1.1, 1.5])),
        "renormalize_logits": lambda: True,
    }
    for name, value in draws.items():
        if r.random() < 0.15:
            options[name] = value()


def draw_mode(r, mode, options):
    if mode == "beam":
        if {"forced_eos_token_id", "forced_bos_token_id"} & set(options):
            # one new token, forced: one real hypothesis, the other slots tie at -1e9 (module docstring)
            options.pop("max_length", None)
            options["max_new_tokens"] = max(options.get("max_new_tokens", 2), 2)
        options["num_beams"] = r.randint(2, 4)
        if r.random() < 0.4:
            options["num_return_sequences"] = r.randint(1, options["num_beams"] + (r.random() < 0.1))  # + 1: refused
        if r.random() < 0.4:
            options["length_penalty"] = r.choice([-1.0, 0.0, 0.5, 2.0])
        if r.random() < 0.4:
            options["early_stopping"] = r.choice([True, False, "never"])
    elif mode == "sample, top_k=1":
        options.update(do_sample=True, top_k=1)
        if r.random() < 0.3:
            options["num_return_sequences"] = 2
    elif mode == "sampled scores":  # one step: the scores are deterministic, the token drawn is not
        options.update(do_sample=True, return_dict_in_generate=True, output_scores=True, max_new_tokens=1)
        options.pop("max_length", None)
        for name, values in SAMPLING_FILTERS.items():
            if r.random() < 0.4:
                options[name] = r.choice(values)


def draw(seed):
    """(prompt, options, mode) for one seed."""
    r = random.Random(seed)
    mode = r.choice(["greedy", "greedy", "beam", "beam", "sample, top_k=1", "sampled scores"])
    ids, mask = PROMPTS[r.randrange(len(PROMPTS))]
    options = {} if mask is None else {"attention_mask": mask}
    draw_lengths_and_ids(r, len(ids[0]) if ids else 1, options)
    draw_processors(r, options, greedy=mode == "greedy")
    if r.random() < 0.1:
        options["stop_strings"] = r.choice(STOP_STRINGS)
    if r.random() < 0.2:
        options["use_cache"] = False
    if r.random() < 0.6:
        options.update(return_dict_in_generate=True, output_scores=r.random() < 0.8, output_logits=r.random() < 0.5)
    draw_mode(r, mode, options)
    if r.random() < 0.2:  # the same options as a GenerationConfig object
        options = {"generation_config": {k: v for k, v in options.items() if k != "attention_mask"},
                   **({"attention_mask": mask} if "attention_mask" in options else {})}
    elif r.random() < 0.2:  # some of them as the model's own defaults (model.generation_config)
        # (not the options transformers' GenerationConfig checks against others when it is built: alone in
        # the model's config, num_return_sequences=2 is "greedy with 2 sequences", a ValueError there)
        moved = [name for name in options if name not in ("attention_mask", "num_return_sequences", "suppress_tokens")
                 and r.random() < 0.5]
        options["model_defaults"] = {name: options.pop(name) for name in moved}
    return ids, options, mode


def generate_both(pair, ids, options):
    """Each library's generate(ids, **options): (transformers', minilora's), each a result or the exception."""
    reference, model, their_tokenizer, our_tokenizer = pair
    results = []
    for lm, to_input, config_class, tokenizer in ((reference, torch.tensor, transformers.GenerationConfig,
                                                   their_tokenizer),
                                                  (model, np.array, ml.nn.generation.GenerationConfig, our_tokenizer)):
        kwargs = dict(options)
        defaults = kwargs.pop("model_defaults", {})
        if "attention_mask" in kwargs:
            kwargs["attention_mask"] = to_input(kwargs["attention_mask"])
        own = lm.generation_config
        try:
            if "generation_config" in kwargs:  # transformers' checks the options when it is built
                kwargs["generation_config"] = config_class(**kwargs["generation_config"])
            if defaults:  # on top of what the model's config already says (transformers: bos / eos / pad ids)
                lm.generation_config = config_class(**{**own.to_dict(), **defaults})
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                prompt = () if ids is None else (to_input(ids),)
                results.append(lm.generate(*prompt, tokenizer=tokenizer, **kwargs))
        except Exception as exc:  # noqa: BLE001 -- compared: where transformers raises, minilora must
            results.append(exc)
        finally:
            lm.generation_config = own
    return results


def assert_same_numbers(ours, theirs, what):
    ours, theirs = np.asarray(ours.numpy()), theirs.numpy()
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.float32, what
    assert (np.isinf(ours) == np.isinf(theirs)).all() and (np.isnan(ours) == np.isnan(theirs)).all(), what
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-4, atol=1e-4, err_msg=what)


def assert_same_output(ours, theirs, tokens_are_drawn):
    if not hasattr(theirs, "sequences"):
        assert ours.tolist() == theirs.tolist()
        return
    assert type(ours).__name__ == type(theirs).__name__
    if tokens_are_drawn:
        assert tuple(ours.sequences.shape) == tuple(theirs.sequences.shape)
    else:
        assert ours.sequences.tolist() == theirs.sequences.tolist()
    for name in ("scores", "logits", "sequences_scores", "beam_indices"):
        mine, ref = getattr(ours, name, None), getattr(theirs, name, None)
        assert (mine is None) == (ref is None), name
        if name == "beam_indices" and ref is not None:
            assert mine.tolist() == ref.tolist()
        elif isinstance(ref, tuple):
            assert len(mine) == len(ref), name
            for step, (a, b) in enumerate(zip(mine, ref)):
                assert_same_numbers(a, b, f"{name}[{step}]")
        elif ref is not None:
            assert_same_numbers(mine, ref, name)


@pytest.mark.parametrize("seed", SEEDS)
def test_generate_as_transformers(pair, seed):
    ids, options, mode = draw(seed)
    theirs, ours = generate_both(pair, ids, options)
    if isinstance(theirs, Exception):
        assert isinstance(ours, Exception), f"transformers raised {theirs!r}; minilora returned"
        return
    assert not isinstance(ours, Exception), f"minilora raised {ours!r}; transformers returned"
    assert_same_output(ours, theirs, tokens_are_drawn=mode == "sampled scores")


def test_the_fuzzer_draws_every_option():
    """The draws reach every option named in the module docstring (a fuzzer that never draws one tests nothing)."""
    drawn = set()
    for seed in SEEDS:
        ids, options, mode = draw(seed)
        drawn |= set(options) | set(options.get("generation_config", {})) | set(options.get("model_defaults", {}))
        drawn.add(mode)
    expected = {"greedy", "beam", "sample, top_k=1", "sampled scores", "max_new_tokens", "max_length",
                "min_new_tokens", "min_length", "eos_token_id", "pad_token_id", "repetition_penalty",
                "encoder_repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "suppress_tokens",
                "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id", "sequence_bias",
                "exponential_decay_length_penalty", "renormalize_logits", "stop_strings", "use_cache",
                "output_scores", "output_logits", "num_return_sequences", "length_penalty", "early_stopping",
                "generation_config", "model_defaults",
                *SAMPLING_FILTERS}
    assert expected <= drawn, expected - drawn


# ----------------------------------------------------------------------------------------------------
# REGRESSIONS (module docstring): each divergence, minimized
# ----------------------------------------------------------------------------------------------------
REGRESSIONS = {
    "right padding: positions after a masked token": (PADDED, dict(max_new_tokens=4, pad_token_id=3)),
    "right padding with beams": (PADDED, dict(max_new_tokens=4, pad_token_id=3, num_beams=2)),
    "min_new_tokens wins over min_length": ([[7, 30, 11]], dict(max_new_tokens=4, min_new_tokens=2, min_length=6,
                                                                 eos_token_id=2, bad_words_ids=[[0, 1], [30]])),
    "min_new_tokens=0 still replaces min_length": ([[20, 21, 22, 23]], dict(max_new_tokens=3, min_new_tokens=0,
                                                                             min_length=6, eos_token_id=2)),
    "typical_p": ([[5, 9, 3, 17, 22]], dict(max_new_tokens=1, do_sample=True, typical_p=0.5, top_k=0,
                                             return_dict_in_generate=True, output_scores=True)),
    "epsilon and eta cutoffs": (PADDED, dict(max_new_tokens=1, do_sample=True, epsilon_cutoff=0.03, eta_cutoff=0.01,
                                             attention_mask=[[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]],
                                             return_dict_in_generate=True, output_scores=True)),
    "encoder_repetition_penalty with beams": ([[12, 3, 3, 12], [20, 21, 22, 23]], dict(
        max_new_tokens=4, encoder_repetition_penalty=0.8, num_beams=3, return_dict_in_generate=True,
        output_scores=True)),
    "renormalize_logits": ([[5, 9, 3, 17, 22]], dict(max_new_tokens=3, renormalize_logits=True,
                                                      repetition_penalty=1.3, return_dict_in_generate=True,
                                                      output_scores=True)),
    "forced_bos_token_id after a one-token prompt": ([[6]], dict(max_new_tokens=3, forced_bos_token_id=9,
                                                                 begin_suppress_tokens=[12, 33])),
    "diversity_penalty without beam groups": ([[5, 9, 3, 17, 22]], dict(max_new_tokens=4, num_beams=2,
                                                                        diversity_penalty=1.0)),
    "exponential_decay_length_penalty": ([[5, 9, 3, 17, 22]], dict(max_new_tokens=8, eos_token_id=[2, 10],
                                                                    exponential_decay_length_penalty=(1, 1.5),
                                                                    return_dict_in_generate=True,
                                                                    output_scores=True)),
}


@pytest.mark.parametrize("case", sorted(REGRESSIONS))
def test_regressions(pair, case):
    ids, options = REGRESSIONS[case]
    theirs, ours = generate_both(pair, ids, options)
    assert not isinstance(theirs, Exception) and not isinstance(ours, Exception), (theirs, ours)
    assert_same_output(ours, theirs, tokens_are_drawn=options.get("do_sample", False))


# Invalid calls transformers refuses: minilora refuses them too (its own words; the type where it is not an accident).
REFUSED = [dict(early_stopping="maybe", num_beams=2), dict(early_stopping="maybe"), dict(max_new_tokens=0),
           dict(num_return_sequences=2), dict(num_beams=2, num_return_sequences=3),
           dict(do_sample=True, typical_p=0.0), dict(do_sample=True, min_p=2.0), dict(do_sample=True, temperature=0.0),
           dict(do_sample=True, top_k=-1), dict(do_sample=True, top_k=2.5), dict(repetition_penalty=0.0),
           dict(encoder_repetition_penalty=0.0), dict(encoder_repetition_penalty=-1.0), dict(bad_words_ids=[[-1]]),
           dict(bad_words_ids=[]), dict(sequence_bias={(3,): 1}), dict(forced_eos_token_id=40),
           dict(forced_eos_token_id=22, begin_suppress_tokens=[22], do_sample=True, max_new_tokens=1)]


@pytest.mark.parametrize("options", REFUSED, ids=[str(o) for o in REFUSED])
def test_what_transformers_refuses_minilora_refuses(pair, options):
    theirs, ours = generate_both(pair, [[5, 9, 3]], {"max_new_tokens": 3, **options})
    assert isinstance(theirs, Exception), theirs
    assert isinstance(ours, Exception), f"transformers raised {theirs!r}; minilora returned"
    if isinstance(theirs, ValueError):
        assert isinstance(ours, ValueError), ours


# Options that change nothing in the call they are in: transformers logs "The following generation flags are
# not valid and may be ignored: [...]"; minilora warns (a UserWarning naming them). Before: silent for these.
IGNORED_FLAGS = [dict(length_penalty=2.0), dict(early_stopping=True), dict(output_scores=True),
                 dict(output_logits=True), dict(typical_p=0.5), dict(epsilon_cutoff=0.1), dict(eta_cutoff=0.1)]


@pytest.mark.parametrize("options", IGNORED_FLAGS, ids=[str(o) for o in IGNORED_FLAGS])
def test_flags_that_change_nothing_are_warned_about(pair, options):
    (name, value), = options.items()
    with pytest.warns(UserWarning, match=f"{name}={value!r}"):
        pair[1].generate(np.array([[5, 9, 3]]), max_new_tokens=2, **options)


def test_sampling_from_a_row_with_nothing_left_is_refused_as_torch_multinomial(pair):
    """The forced eos id is also suppressed at the first step (begin_suppress_tokens): every score is -inf.
    torch.multinomial refuses to draw from it; minilora drew token 0 before."""
    options = dict(max_new_tokens=1, forced_eos_token_id=22, begin_suppress_tokens=[22], do_sample=True)
    theirs, ours = generate_both(pair, [[5, 9, 3]], options)
    assert isinstance(theirs, RuntimeError) and isinstance(ours, RuntimeError), (theirs, ours)
    assert "nothing to sample from" in str(ours)


def test_forcing_a_suppressed_token_is_refused_as_transformers(pair):
    for forced in ("forced_eos_token_id", "forced_bos_token_id"):
        theirs, ours = generate_both(pair, [[6]], {forced: 33, "suppress_tokens": [33, 4], "max_new_tokens": 3})
        assert isinstance(theirs, ValueError) and isinstance(ours, ValueError), (theirs, ours)
        assert forced in str(ours) and "suppress_tokens" in str(ours)
