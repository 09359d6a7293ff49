"""The tokenizer's call / encode / decode / pad keywords and settable attributes, value by value, as transformers
5.25's fast tokenizers answer them (LlamaTokenizerFast and BertTokenizer folders, AutoTokenizer as the oracle).

A survey of 1,086 calls (every keyword of __call__, encode, decode, batch_decode, convert_ids_to_tokens,
convert_tokens_to_string, pad and apply_chat_template with the values users pass, on single texts, batches, empty
strings, emoji and whitespace, and bad values) found 133 divergences, 57 after this round's fixes, all of them
deliberate (DELIBERATE below). Fixed here, each one silently other ids or an error where transformers
answers: ``tok.split_special_tokens = True`` (the attribute was missing: "<s>" in a text stayed BOS), ``encode``
of a list of texts (transformers 5 encodes the batch; minilora refused it), ``tokenizer.pad``'s padding strategy
(a bad name padded to the longest row; "max_length" without max_length raised; padding without a pad token passed
when the rows were already equal), ``return_attention_mask=False`` in pad (a given mask was dropped), Tensor rows
given to pad (came back as lists), pad's ``verbose``, decode's ``spaces_between_special_tokens`` (TypeError), a
ragged batch with ``return_tensors="np"`` (transformers 5: an object array of rows), ``num_special_tokens_to_add``
and the ``special_tokens_map`` / ``is_fast`` / ``vocab`` / ``max_len_single_sentence`` /
``max_len_sentences_pair`` / ``extra_special_tokens_ids`` / ``name_or_path`` attributes (missing: AttributeErrors),
float ids given to decode (truncated to ids; transformers' TypeError) and the warning minilora gave for ``max_length`` without ``truncation`` (transformers 5 truncates
silently). With GPT-2, Qwen2 and Gemma folders added the survey is 2,900 calls: 357 divergences before, 167 after,
all deliberate: minilora's ValueError where transformers raises a bare Exception / Rust panic / OverflowError (not
counted), its warning for padding="max_length" with no length to pad to, an empty batch answered empty (an
IndexError there), and the refusals of DELIBERATE.
"""
import warnings
from collections.abc import Mapping

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from test_tokenizer_classes_r13 import _bert_like_folder  # noqa: E402
from test_tokenizer_offpath_r10 import _both, _llama_folder  # noqa: E402

import minilora  # noqa: E402

TEXTS = ["hello world", "the cat sat on the mat and the dog ran in the park", "", " ", "  a  b ", "café 🙂 日本",
         "a\tb\nc"]
PAIRS = ["the cat", "a dog ran in the park today"]
SPECIAL_TEXT = "hello <s> world [CLS] x </s> [PAD]"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    (root / "llama").mkdir(), (root / "bert").mkdir()
    return {"llama": _llama_folder(root / "llama"), "bert": _bert_like_folder(root / "bert", "BertTokenizer")}


def _plain(value):
    """A call's answer as comparable data: tensors and arrays as (kind, dtype, shape, values)."""
    if isinstance(value, Mapping):  # (transformers' BatchEncoding is a UserDict)
        return {key: _plain(v) for key, v in dict(value).items()}
    if isinstance(value, (torch.Tensor, minilora.Tensor)):
        return ("tensor", str(value.dtype).split(".")[-1], tuple(value.shape), value.tolist())
    if isinstance(value, np.ndarray):
        rows = [_plain(v) for v in value] if value.dtype == object else value.tolist()
        return ("array", str(value.dtype), value.shape, rows)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _answer(call, tok):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return "ok", _plain(call(tok))
        except Exception as exc:  # noqa: BLE001 -- transformers' own errors are plain Exceptions; what matters is
            return "error", type(exc).__name__  # that both refuse


def _assert_same(folder, call, pad_token=True):
    theirs, ours = _both(folder)
    if pad_token:
        for tok in (theirs, ours):
            tok.pad_token = tok.pad_token or tok.eos_token
    want, got = _answer(call, theirs), _answer(call, ours)
    assert got[0] == want[0], (want, got)
    if want[0] == "ok":
        assert got == want


def _features(tok):
    return [tok(text) for text in TEXTS[:3]]


CALLS = {
    # the call, keyword by keyword
    "padding strategies": lambda k: [k(TEXTS, padding=p, max_length=m, truncation=t) for p in
                                     (True, "longest", "max_length", False, "do_not_pad") for m in (None, 4, 12)
                                     for t in (None, True, "longest_first", "only_first", False)],
    "pair truncation": lambda k: [k(TEXTS[:2], PAIRS[::-1], truncation=t, max_length=m, padding=True)
                                  for t in (True, "longest_first", "only_second") for m in (8, 12)],
    "max_length without truncation": lambda k: (k(TEXTS[1], max_length=4), k.encode(TEXTS[1], max_length=4)),
    "return_tensors": lambda k: [(k(TEXTS[1], return_tensors=r), k(TEXTS, padding=True, return_tensors=r),
                                  k.encode(TEXTS[1], return_tensors=r)) for r in (None, "pt", "np")],
    "ragged np batch": lambda k: (k(TEXTS, return_tensors="np"), k(TEXTS, add_special_tokens=False, return_tensors="np")),
    "ragged pt batch": lambda k: k(TEXTS, return_tensors="pt"),
    "return_* keys": lambda k: [k(TEXTS[:2], padding=True, return_tensors=r, return_token_type_ids=True,
                                  return_special_tokens_mask=True, return_offsets_mapping=True, return_length=True,
                                  return_attention_mask=m) for r in (None, "pt") for m in (None, False)],
    "stride overflow": lambda k: [k(TEXTS[:3], truncation=True, max_length=m, stride=s, return_overflowing_tokens=True)
                                  for s in (0, 1) for m in (4, 6)],  # (a stride past the room: a Rust panic there)
    "pad_to_multiple_of": lambda k: [k(TEXTS, padding=p, max_length=10, pad_to_multiple_of=m) for m in (None, 3, 8)
                                     for p in (True, "max_length")],
    "padding_side": lambda k: [k(TEXTS, padding=True, padding_side=s) for s in ("left", "right", None)],
    "is_split_into_words": lambda k: k([["hello", "world"], ["the", "cat", "sat"], ["café", "🙂"]],
                                       is_split_into_words=True, return_offsets_mapping=True, padding=True),
    "text_target": lambda k: (k(TEXTS[:2], text_target=PAIRS, padding=True, return_tensors="np"),
                              k(text_target=PAIRS), k(TEXTS[:2], PAIRS, text_target=PAIRS, text_pair_target=TEXTS[:2])),
    "verbose=False": lambda k: k(TEXTS, padding=True, max_length=3, verbose=False),
    "split_special_tokens keyword": lambda k: k([SPECIAL_TEXT], split_special_tokens=True),
    "bad padding name": lambda k: k(TEXTS, padding="foo"),
    "bad truncation name": lambda k: k(TEXTS, truncation="foo"),
    "bad return_tensors": lambda k: k(TEXTS, return_tensors="tf"),
    # encode
    "encode a batch": lambda k: (k.encode(TEXTS), k.encode(TEXTS, add_special_tokens=False), k.encode([""]),
                                 k.encode(TEXTS[:2], padding=True, return_tensors="pt")),
    "encode a pair": lambda k: (k.encode(TEXTS[0], PAIRS[0]), k.encode(TEXTS[:2], PAIRS)),
    "encode_plus (removed in transformers 5)": lambda k: k.encode_plus(TEXTS[0]),
    "num_special_tokens_to_add": lambda k: (k.num_special_tokens_to_add(), k.num_special_tokens_to_add(pair=True)),
    # decode
    "decode keywords": lambda k: [k.decode(row, skip_special_tokens=s, spaces_between_special_tokens=b)
                                  for row in k(TEXTS + [SPECIAL_TEXT])["input_ids"] for s in (True, False)
                                  for b in (True, False)],
    "batch_decode keywords": lambda k: k.batch_decode(k(TEXTS + [SPECIAL_TEXT])["input_ids"], skip_special_tokens=True,
                                                      spaces_between_special_tokens=False),
    "decode tensors": lambda k: (k.decode(k(TEXTS[:2], return_tensors="pt", padding=True)["input_ids"]),
                                 k.decode(k(TEXTS[1], return_tensors="pt")["input_ids"][0, 1])),
    "decode float ids (refused)": lambda k: k.decode(np.array([1.0, 2.0])),
    "batch_decode float ids (refused)": lambda k: k.batch_decode([[1.5, 2.0]]),
    "ids and tokens": lambda k: (k.convert_ids_to_tokens(k(SPECIAL_TEXT)["input_ids"], skip_special_tokens=True),
                                 k.convert_tokens_to_string(k.tokenize(TEXTS[5] + " " + TEXTS[1]))),
    # pad
    "pad strategies": lambda k: [k.pad(_features(k), padding=p, max_length=m, pad_to_multiple_of=t)
                                 for p in (True, "longest", "max_length", False, "do_not_pad")
                                 for m in (None, 20) for t in (None, 8)],
    "pad bad name": lambda k: k.pad(_features(k), padding="foo"),
    "pad return_attention_mask=False": lambda k: (k.pad(_features(k), return_attention_mask=False),
                                                  k.pad({"input_ids": [[1, 2], [3]]}, return_attention_mask=False)),
    "pad Tensor rows": lambda k: k.pad([{"input_ids": k(t, return_tensors="pt")["input_ids"][0]} for t in TEXTS[:3]]),
    "pad array rows": lambda k: k.pad([{"input_ids": np.array(k(t)["input_ids"])} for t in TEXTS[:3]]),
    "pad verbose": lambda k: k.pad(_features(k), verbose=False, padding_side="left", return_tensors="np"),
    # chat templates
    "apply_chat_template": lambda k: [k.apply_chat_template(
        [CHAT, CHAT[:2]], chat_template=TEMPLATE, padding=True, return_tensors=r, add_generation_prompt=g,
        return_assistant_tokens_mask=not g) for r in (None, "pt") for g in (True, False)],
    "apply_chat_template truncation": lambda k: k.apply_chat_template(CHAT, chat_template=TEMPLATE, truncation=True,
                                                                      max_length=5),
}

CHAT = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello world"},
        {"role": "assistant", "content": "the cat"}]
TEMPLATE = ("{% for m in messages %}{{ bos_token if loop.first else '' }}{{ m['role'] }}: {% if m['role'] == "
            "'assistant' %}{% generation %}{{ m['content'] }}{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}"
            "\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")


def _set(tok, **attributes):
    for name, value in attributes.items():
        setattr(tok, name, value)
    return tok


ATTRIBUTES = {
    "split_special_tokens": lambda k: (k.split_special_tokens, _set(k, split_special_tokens=True)(SPECIAL_TEXT),
                                       k.tokenize(SPECIAL_TEXT)),
    "padding_side / truncation_side": lambda k: _set(k, padding_side="left", truncation_side="left")(
        TEXTS[:2], PAIRS, padding=True, truncation=True, max_length=6),
    "model_max_length": lambda k: (_set(k, model_max_length=5)(TEXTS, truncation=True),
                                   k(TEXTS, padding="max_length")),
    "add_bos_token / add_eos_token": lambda k: (_set(k, add_bos_token=False, add_eos_token=True)(TEXTS[:2]),
                                                k(TEXTS[0], PAIRS[0])),
    "what a tokenizer says of itself": lambda k: (
        _set(k, model_max_length=512).special_tokens_map, k.is_fast, k.vocab, k.max_len_single_sentence,
        k.max_len_sentences_pair, k.add_special_tokens({"extra_special_tokens": ["<a>"], "pad_token": "<p>"}),
        k.extra_special_tokens_ids, k.special_tokens_map, k.name_or_path),
    "add_tokens": lambda k: (k.add_tokens(["newtok", "<x>"]), len(k), k("hello newtok world foo<x>bar")["input_ids"]),
    "add_special_tokens": lambda k: (k.add_special_tokens({"additional_special_tokens": ["<extra>"]}), len(k),
                                     k.all_special_ids, k.decode(k("hi <extra> x")["input_ids"],
                                                                 skip_special_tokens=True)),
}


@pytest.mark.parametrize("folder_name", ["llama", "bert"])
@pytest.mark.parametrize("name", list(CALLS))
def test_keyword_as_transformers(folders, folder_name, name):
    _assert_same(folders[folder_name], CALLS[name])


@pytest.mark.parametrize("folder_name", ["llama", "bert"])
@pytest.mark.parametrize("name", list(ATTRIBUTES))
def test_attribute_as_transformers(folders, folder_name, name):
    _assert_same(folders[folder_name], ATTRIBUTES[name])


def test_pad_without_a_pad_token_is_refused_as_in_transformers(folders):
    """Rows already of one length: transformers still refuses to pad without a pad token (a collator's first batch
    must not pass where the next one fails)."""
    for folder in folders.values():
        _assert_same(folder, lambda k: k.pad([{"input_ids": [1, 2]}, {"input_ids": [3, 4]}]), pad_token=False)
    theirs, ours = _both(folders["llama"])
    with pytest.raises(ValueError, match="does not have a padding token"):
        ours.pad([{"input_ids": [1, 2]}, {"input_ids": [3, 4]}])


def test_split_special_tokens_loads_and_saves(folders, tmp_path):
    """from_pretrained(..., split_special_tokens=True) sets the attribute, save_pretrained keeps it."""
    theirs, ours = _both(folders["llama"], split_special_tokens=True)
    assert ours.split_special_tokens is theirs.split_special_tokens is True
    assert ours(SPECIAL_TEXT)["input_ids"] == theirs(SPECIAL_TEXT)["input_ids"]
    ours.save_pretrained(tmp_path)
    again = minilora.tokenizer.from_pretrained(tmp_path)
    assert again.split_special_tokens and again(SPECIAL_TEXT)["input_ids"] == theirs(SPECIAL_TEXT)["input_ids"]


# What minilora answers differently on purpose: a clear error (or a warning) where transformers goes on
DELIBERATE = {
    "an unknown call keyword (transformers drops it)": (lambda k: k(TEXTS, foo=1), NotImplementedError, "foo"),
    "an unknown decode keyword (transformers drops it)": (lambda k: k.decode([1, 2], foo=1), TypeError, "foo"),
    "max_length=0 (transformers does not truncate)": (lambda k: k(TEXTS, max_length=0, truncation=True), ValueError,
                                                      "max_length must be a positive integer"),
    "a special token name set to a string outside the vocabulary (transformers: the unk id)": (
        lambda k: setattr(k, "eos_token", "<new_eos>"), ValueError, "not in the tokenizer's vocabulary"),
    "a Python function as a tool (transformers writes its schema)": (
        lambda k: k.apply_chat_template(CHAT, chat_template=TEMPLATE, tools=[len]), NotImplementedError, "schema"),
}


@pytest.mark.parametrize("name", list(DELIBERATE))
def test_what_minilora_refuses_by_name(folders, name):
    call, error, words = DELIBERATE[name]
    _, ours = _both(folders["llama"])
    with pytest.raises(error, match=words):
        call(ours)


def test_max_length_alone_truncates_without_a_warning_as_transformers_5(folders):
    """transformers 5 reads max_length without truncation as truncation="longest_first", silently (minilora warned);
    ``verbose=False`` silences the one warning left, max_length beside padding=True."""
    theirs, ours = _both(folders["llama"])
    ours.pad_token = theirs.pad_token = theirs.eos_token
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ours(TEXTS[1], max_length=4)["input_ids"] == theirs(TEXTS[1], max_length=4)["input_ids"]
        assert ours(TEXTS, padding=True, max_length=4, verbose=False) == theirs(TEXTS, padding=True, max_length=4,
                                                                              verbose=False).data
    with pytest.warns(UserWarning, match="`max_length` is ignored when `padding`=`True`"):
        ours(TEXTS, padding=True, max_length=4)


@pytest.mark.parametrize("call", [lambda k: k(TEXTS[1], verbose=False), lambda k: k.encode(TEXTS[1], verbose=False),
                                  lambda k: k([TEXTS[1]], text_target=[TEXTS[1]], verbose=False)])
def test_verbose_false_silences_the_too_long_warning_as_transformers(folders, call):
    """A row past model_max_length is warned about (once per tokenizer), unless the call says verbose=False."""
    theirs, ours = _both(folders["bert"])
    theirs.model_max_length = ours.model_max_length = 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _plain(call(ours)) == _plain(call(theirs))
    with pytest.warns(UserWarning, match="Token indices sequence length is longer"):
        ours(TEXTS[1])
