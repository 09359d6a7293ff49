"""transformers users' scripts off the paths the earlier rounds tested, run with transformers + torch and with
minilora on the same weights (a tiny random Llama; the r9 Llama-2-style tokenizer folder), one test per
divergence found:

* ``DataCollatorForLanguageModeling(mlm=True)``: BERT-style masking (80% mask token, 10% random, 10% kept)
  with transformers' draws, seeded or global, torch's or NumPy's generator (minilora refused mlm=True);
Skipped when torch / transformers / tokenizers are not installed."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import minilora as ml  # noqa: E402
import minilora.data as ml_data  # noqa: E402
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
