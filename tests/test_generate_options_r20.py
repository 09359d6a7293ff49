"""generate()'s options swept against transformers 5 on one tiny Llama (round 20), greedy and sampled
(``torch.manual_seed(s)`` beside ``minilora.manual_seed(s)``: the same tokens drawn).

The sweep (lengths, every sampling filter, the logits processors, eos lists, padding, num_return_sequences,
scores, stop strings, beams, GenerationConfig objects, invalid combinations and the warnings) agreed
token for token except for the special token ids given as tensors:

| user call                                        | transformers                   | minilora before            |
|--------------------------------------------------|--------------------------------|----------------------------|
| generate(ids, eos_token_id=tensor([4, 7]))       | stops at 4 or 7 (it makes a    | ValueError: only one       |
|  (a minilora Tensor, a NumPy array, a torch one) |  tensor of whatever it gets)   |  element tensors ...       |
| forced_eos_token_id=tensor([4, 7])               | forces 4 or 7                  | the same ValueError        |
| pad_token_id=tensor(0) / bos_token_id=tensor(6)  | as the ints                    | as the ints (checked here) |
| generate(do_sample=True, temperature=None)       | samples untempered (the warper | ValueError: temperature    |
|  (also over a model config's temperature=0.6)    |  is added only for not None)   |  (=None) has to be ...     |
| repetition_penalty=None,                         | no penalty                     | ValueError                 |
|  encoder_repetition_penalty=None                 |                                |                            |
| generate(max_new_tokens=3, min_length=20)       | UserWarning "Unfeasible length | silent                     |
|  (also min_new_tokens past the maximum)          |  constraints: ..."             |                            |
| eos_token_id=-1 (or a list holding a negative id)| "`eos_token_id` should consist | silent                     |
|                                                  |  of positive integers" (logged)|                            |
| pad_token_id=-1                                  | "not valid flags: pad_token_id"| silent                     |

Left alone: use_cache=None with sampling (transformers' own logits go wrong from the fourth step: its bug;
minilora takes None as the default cache, as with greedy decoding, where both agree).
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import minilora as ml  # noqa: E402

from test_generate_fuzz_r5 import pair  # noqa: E402,F401

PROMPT = [[5, 9, 3, 17, 22]]
PADDED = [[0, 0, 5, 9, 3], [4, 8, 6, 1, 13]]
TENSOR_KINDS = {"minilora": ml.tensor, "numpy": np.array, "torch": torch.tensor}


def generate_both(pair, ids, theirs, ours, seed=0, **common):
    """transformers' generate(ids, **common, **theirs) and minilora's with **ours, each after its library's
    manual_seed(seed)."""
    reference, model = pair[0], pair[1]
    torch.manual_seed(seed)
    with torch.no_grad():
        expected = reference.generate(*([] if ids is None else [torch.tensor(ids)]), **common, **theirs)
    ml.manual_seed(seed)
    got = model.generate(*([] if ids is None else [np.array(ids)]), **common, **ours)
    return expected.tolist(), got.tolist()


@pytest.mark.parametrize("kind", sorted(TENSOR_KINDS))
def test_eos_ids_as_a_tensor_stop_as_the_list(pair, kind):
    to_tensor = TENSOR_KINDS[kind]
    for eos in ([4, 7], [33, 10]):
        expected, got = generate_both(pair, PROMPT, dict(eos_token_id=torch.tensor(eos)),
                                      dict(eos_token_id=to_tensor(eos)), max_new_tokens=8)
        assert got == expected
    assert len(expected[0]) < len(PROMPT[0]) + 8  # (33 comes: it did stop early)


@pytest.mark.parametrize("kind", sorted(TENSOR_KINDS))
def test_sampled_batch_with_eos_and_pad_tensors(pair, kind):
    """A left-padded batch, the mask inferred from a pad id given as a 0-d tensor; sampled, seeded."""
    to_tensor = TENSOR_KINDS[kind]
    expected, got = generate_both(pair, PADDED, dict(eos_token_id=torch.tensor([20, 7]), pad_token_id=torch.tensor(0)),
                                  dict(eos_token_id=to_tensor([20, 7]), pad_token_id=to_tensor(0)), seed=0,
                                  max_new_tokens=8, do_sample=True)
    assert got == expected
    assert expected[0][-1] == 0  # the first row ended (eos 20) and was padded with the tensor's id


@pytest.mark.parametrize("kind", sorted(TENSOR_KINDS))
def test_forced_eos_and_bos_ids_as_tensors(pair, kind):
    to_tensor = TENSOR_KINDS[kind]
    # (two forced ids tie at 0: greedy's argmax takes the first, in both)
    expected, got = generate_both(pair, PROMPT, dict(forced_eos_token_id=torch.tensor([4, 7])),
                                  dict(forced_eos_token_id=to_tensor([4, 7])), max_new_tokens=3)
    assert got == expected and got[0][-1] == 4
    expected, got = generate_both(pair, None, dict(bos_token_id=torch.tensor(6)), dict(bos_token_id=to_tensor(6)),
                                  max_new_tokens=3)
    assert got == expected and got[0][0] == 6


NONE_IS_OFF = [dict(do_sample=True, temperature=None), dict(repetition_penalty=None),
               dict(do_sample=True, encoder_repetition_penalty=None, top_k=4)]


@pytest.mark.parametrize("options", NONE_IS_OFF, ids=[str(o) for o in NONE_IS_OFF])
def test_a_factor_of_none_is_off_as_in_transformers(pair, options):
    expected, got = generate_both(pair, PROMPT, options, options, seed=1, max_new_tokens=5)
    assert got == expected
    off = {name: 1.0 if value is None else value for name, value in options.items()}
    assert generate_both(pair, PROMPT, off, off, seed=1, max_new_tokens=5)[1] == got


def test_temperature_none_overrides_the_model_config(pair):
    reference, model = pair[0], pair[1]
    saved = reference.generation_config.temperature, model.generation_config.temperature
    reference.generation_config.temperature = model.generation_config.temperature = 0.6
    try:
        expected, got = generate_both(pair, PROMPT, {}, {}, seed=2, do_sample=True, temperature=None,
                                      max_new_tokens=5)
    finally:
        reference.generation_config.temperature, model.generation_config.temperature = saved
    assert got == expected


UNFEASIBLE = [dict(min_length=20), dict(min_new_tokens=5), dict(min_new_tokens=5, min_length=3),
              dict(min_length=20, max_length=7), dict(min_new_tokens=4, max_length=7, max_new_tokens=None)]


@pytest.mark.parametrize("options", UNFEASIBLE, ids=[str(o) for o in UNFEASIBLE])
def test_a_minimum_past_the_maximum_is_warned_about_as_in_transformers(pair, options):
    """transformers' "Unfeasible length constraints" UserWarnings, the same ones (none for a minimum that is
    the maximum itself)."""
    def unfeasible(lm, ids, options):
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            lm.generate(ids, **{"max_new_tokens": 3, **options})
        return [str(w.message) for w in caught if "Unfeasible" in str(w.message)]
    theirs = unfeasible(pair[0], torch.tensor(PROMPT), options)
    assert theirs and unfeasible(pair[1], np.array(PROMPT), options) == theirs
    at_the_maximum = dict(min_length=8)  # 5 + 3
    assert unfeasible(pair[1], np.array(PROMPT), at_the_maximum) == [] == unfeasible(pair[0], torch.tensor(PROMPT),
                                                                                       at_the_maximum)


@pytest.mark.parametrize("eos", [-1, [2, -5]])
def test_a_negative_eos_id_is_warned_about(pair, eos):
    """No token is a negative id: generation runs to the maximum length. transformers logs a warning; minilora
    warns with its words, and the tokens are transformers' (the other ids still stop a row)."""
    with pytest.warns(UserWarning, match="`eos_token_id` should consist of positive integers"):
        expected, got = generate_both(pair, PROMPT, dict(eos_token_id=eos), dict(eos_token_id=eos), max_new_tokens=4)
    assert got == expected


def test_a_negative_pad_id_is_warned_about(pair):
    options = dict(pad_token_id=-1, eos_token_id=10, do_sample=True)  # the row ends at 10, then -1s
    with pytest.warns(UserWarning, match="`pad_token_id` should be positive but got -1"):
        expected, got = generate_both(pair, PADDED, options, options, attention_mask=None, max_new_tokens=6)
    assert got == expected
