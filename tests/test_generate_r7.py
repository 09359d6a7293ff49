"""generate()'s left-alones of round 6, side by side with transformers 5 on the same tiny Llama:

| user call                                       | transformers                          | minilora before              |
|-------------------------------------------------|---------------------------------------|------------------------------|
| generate(do_sample=True, top_p=1.5)             | samples as top_p=1.0 (the warper is   | ValueError                   |
|  (also typical_p=1.5)                           |  added only below 1)                  |                              |
| GenerationConfig.from_pretrained(folder without | OSError                               | an empty config              |
|  generation_config.json)                        |                                       |                              |
| GenerationConfig.from_pretrained(folder,        | that file, the options set on top     | TypeError                    |
|  "chat.json", top_k=3)                          |                                       |                              |

Kept as they were, checked here: top_p < 0 and typical_p <= 0 are ValueErrors in both; the filters themselves
(``top_p_filter``, ``typical_filter``, as transformers' warpers) refuse a mass above 1; a model folder without
generation_config.json still loads (every option unset). A 1-D prompt stays minilora's convenience
(transformers: IndexError deep inside; see test_tokenizer_generate_r6.py).
"""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402
from minilora.nn import generation  # noqa: E402

from test_generate_fuzz_r5 import TINY, assert_same_output, generate_both, pair  # noqa: E402,F401

PROMPT = [[5, 9, 3, 17, 22]]
ABOVE_ONE = [dict(top_p=1.5), dict(typical_p=1.5), dict(top_p=2, typical_p=1.0001, top_k=0)]


@pytest.mark.parametrize("options", ABOVE_ONE, ids=[str(o) for o in ABOVE_ONE])
def test_mass_filters_above_one_are_off_as_in_transformers(pair, options):
    call = dict(do_sample=True, max_new_tokens=1, return_dict_in_generate=True, output_scores=True, **options)
    theirs, ours = generate_both(pair, PROMPT, call)
    assert not isinstance(theirs, Exception), theirs
    assert not isinstance(ours, Exception), ours
    assert_same_output(ours, theirs, tokens_are_drawn=True)  # the warped scores: nothing cut
    _, off = generate_both(pair, PROMPT, {**call, **{k: 1.0 for k in options if k != "top_k"}})
    np.testing.assert_array_equal(ours.scores[0].numpy(), off.scores[0].numpy())
    model = pair[1]
    drawn = [model.generate(np.array(PROMPT), do_sample=True, max_new_tokens=4, seed=3, **o).tolist()
             for o in (options, {k: v for k, v in options.items() if k == "top_k"})]
    assert drawn[0] == drawn[1]


@pytest.mark.parametrize("options", [dict(top_p=-0.1), dict(typical_p=0.0), dict(typical_p=-2.0)])
def test_masses_below_the_range_are_refused_by_both(pair, options):
    theirs, ours = generate_both(pair, PROMPT, dict(do_sample=True, max_new_tokens=2, **options))
    assert isinstance(theirs, ValueError) and isinstance(ours, ValueError), (theirs, ours)
    assert next(iter(options)) in str(ours)


def test_the_filters_themselves_refuse_a_mass_above_one():
    logits = np.log(np.array([[0.5, 0.3, 0.2]], dtype=np.float32))
    for ours, theirs in ((generation.top_p_filter, transformers.TopPLogitsWarper),
                         (generation.typical_filter, transformers.TypicalLogitsWarper)):
        with pytest.raises(ValueError):
            theirs(1.5)
        with pytest.raises(ValueError):
            ours(logits, 1.5)
        np.testing.assert_array_equal(ours(logits, 1.0), logits)


def test_generation_config_from_a_folder_without_the_file(tmp_path):
    with pytest.raises(OSError, match="generation_config.json"):
        transformers.GenerationConfig.from_pretrained(str(tmp_path))
    with pytest.raises(OSError, match="generation_config.json"):
        generation.GenerationConfig.from_pretrained(tmp_path)
    saved = generation.GenerationConfig(do_sample=True, top_p=0.9)
    saved.save_pretrained(tmp_path)
    assert generation.GenerationConfig.from_pretrained(tmp_path) == saved
    theirs = transformers.GenerationConfig.from_pretrained(str(tmp_path))
    assert (theirs.do_sample, theirs.top_p) == (True, 0.9)


def test_generation_config_from_pretrained_takes_transformers_arguments(tmp_path):
    """``from_pretrained(folder, config_file_name, **kwargs)``: another file, options set on top, unused kwargs
    (before: only the folder; a keyword was a TypeError)."""
    transformers.GenerationConfig(do_sample=True, top_p=0.9).save_pretrained(str(tmp_path))
    for module in (transformers, ml.nn.generation):
        config = module.GenerationConfig.from_pretrained(str(tmp_path), top_k=3, temperature=0.5)
        assert (config.do_sample, config.top_p, config.top_k, config.temperature) == (True, 0.9, 3, 0.5)
        config, unused = module.GenerationConfig.from_pretrained(str(tmp_path), top_k=3, return_unused_kwargs=True)
        assert config.top_k == 3 and unused == {}
        with pytest.raises(ValueError, match="max_new_tokens"):
            module.GenerationConfig.from_pretrained(str(tmp_path), max_new_tokens=0)
    os.rename(tmp_path / "generation_config.json", tmp_path / "chat.json")
    for module in (transformers, ml.nn.generation):
        assert module.GenerationConfig.from_pretrained(str(tmp_path), "chat.json").top_p == 0.9
        assert module.GenerationConfig.from_pretrained(str(tmp_path), config_file_name="chat.json").do_sample is True
        with pytest.raises(OSError, match="generation_config.json"):
            module.GenerationConfig.from_pretrained(str(tmp_path))


def test_a_model_folder_without_generation_config_still_loads(tmp_path):
    model = ml.models.LlamaForCausalLM(TINY)
    model.save_pretrained(tmp_path)
    if os.path.exists(tmp_path / "generation_config.json"):
        os.remove(tmp_path / "generation_config.json")
    loaded = ml.models.LlamaForCausalLM.from_pretrained(tmp_path)
    # the config's ids and use_cache, as transformers' model loaded from that folder has them (nothing else is set but
    # its mark; the writer's version is each library's own)
    transformers = pytest.importorskip("transformers")
    theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path).generation_config
    mine = loaded.generation_config.to_diff_dict()
    assert mine.pop("transformers_version").startswith("minilora")
    assert mine == {k: v for k, v in theirs.to_diff_dict().items() if k != "transformers_version"}
    assert loaded.generate(np.array(PROMPT), max_new_tokens=2).shape == (1, 7)
