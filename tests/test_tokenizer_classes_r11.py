"""Tokenizer folders of other classes tokenize as transformers 5 tokenizes them.

transformers 5's CodeLlamaTokenizer, GemmaTokenizer, CohereTokenizer, Qwen2Tokenizer, GPT2Tokenizer,
GPTNeoXTokenizer (like LlamaTokenizer, round 10) keep a tokenizer.json's vocabulary and rebuild its model options,
normalizer, pre-tokenizer and decoder (and some the post-processor) from their own __init__; minilora ran the file
as written: a Llama file under GemmaTokenizer gave other ids for 1297 of 2000 checks, a Pythia-style file under
GPTNeoXTokenizer other offsets (364 of 2000), a CodeLlama folder other ids after a special token and no infilling.
A model folder's config.json decides too: a Mistral or Phi-3 folder naming LlamaTokenizerFast runs its file as
written there (minilora rebuilt it as Llama: 833 of 2000 differed). Every comparison is against transformers'
AutoTokenizer on the same folder.
"""
import json
import warnings

import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from tokenizers import decoders, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

from minilora.tokenizer import ByteTokenizer  # noqa: E402
from minilora.tokenizer import from_pretrained as ml_tokenizer  # noqa: E402

CORPUS = ["the cat sat on the mat", "hello world, the quick brown fox", "café naïve", "a\tb\nc  d",
          "def f(x):\n\treturn x + 1", "for i in range(10):\n    print(i)", "12345 67 8.9"] * 3
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]
INFILLING = ["▁<PRE>", "▁<MID>", "▁<SUF>", "▁<EOT>"]

# special tokens at the start / middle / end, leading, double and trailing spaces, newlines and tabs, code,
# digits, accents, CJK and emoji (byte fallback), the empty string; {bos} / {eos}: the folder's own tokens
PREFIXES = ["", " ", "  ", "\n", "{bos}", " {bos}"]
BODIES = ["the cat", "hello  world", "café naïve", "日本 🙂", "x {bos} y", "def f(x):\n\treturn 12345",
          "  indented\n    code", ""]
SUFFIXES = ["", " ", " {eos}", "\n"]


def _texts(tok):
    fill = {"bos": tok.bos_token or "<|none|>", "eos": tok.eos_token or "<|none|>"}
    return [(p + b + s).format(**fill) for p in PREFIXES for b in BODIES for s in SUFFIXES]


def _write(folder, tok, config, model_type=None):
    spec = json.loads(tok.to_str())  # byte and infilling tokens are vocabulary, not added tokens (as Llama 2's)
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in BYTE_TOKENS + INFILLING]
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    (folder / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    if model_type is not None:
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def _sentencepiece_folder(folder, tokenizer_class, model_type=None, gemma=False):
    """A Llama 2 style file (Prepend + Replace normalizer, "<s> $A"), or Gemma's (Replace only, "<bos> $A")."""
    special = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] if gemma else ["<unk>", "<s>", "</s>"]
    bos, eos = special[2 if gemma else 1], special[1 if gemma else 2]
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁") if gemma else \
        normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=len(special) + 380, show_progress=False,
                                                        special_tokens=special + INFILLING + BYTE_TOKENS))
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    return _write(folder, tok, {"bos_token": bos, "eos_token": eos, "unk_token": "<unk>",
                                "tokenizer_class": tokenizer_class}, model_type)


def _byte_level_folder(folder, tokenizer_class, model_type=None):
    """A Pythia / GPT-2 style byte-level file (ByteLevel pre-tokenizer and post-processor)."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.normalizer, tok.decoder = normalizers.NFC(), decoders.ByteLevel()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=380, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    return _write(folder, tok, {"eos_token": "<|endoftext|>", "tokenizer_class": tokenizer_class}, model_type)


def _both(folder, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verbosity = transformers.logging.get_verbosity()  # (put back after: a level left at error changes
        transformers.logging.set_verbosity_error()        # later tests' transformers, e.g. disable_tqdm's default)
        try:
            return transformers.AutoTokenizer.from_pretrained(str(folder), **kwargs), ml_tokenizer(folder, **kwargs)
        finally:
            transformers.logging.set_verbosity(verbosity)


def _assert_same_tokenization(theirs, ours):
    texts = _texts(theirs)
    for add_special_tokens in (True, False):
        expected = theirs(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        got = ours(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        for text, want, have, want_offsets, have_offsets in zip(texts, expected["input_ids"], got["input_ids"],
                                                                expected["offset_mapping"], got["offset_mapping"]):
            assert (text, have, have_offsets) == (text, want, want_offsets)
        for skip in (True, False):
            assert ours.batch_decode(expected["input_ids"], skip_special_tokens=skip) == \
                theirs.batch_decode(expected["input_ids"], skip_special_tokens=skip)
    assert [ours.tokenize(t) for t in texts[::3]] == [theirs.tokenize(t) for t in texts[::3]]
    assert (len(ours), ours.all_special_tokens, ours.all_special_ids, ours.padding_side) == \
        (len(theirs), theirs.all_special_tokens, theirs.all_special_ids, theirs.padding_side)
    assert (ours.add_bos_token, ours.add_eos_token) == (theirs.add_bos_token, theirs.add_eos_token)


FOLDERS = {  # the class's own kind of file, and a Llama file under another class (what a user's folder may hold)
    "CodeLlamaTokenizer": lambda d: _sentencepiece_folder(d, "CodeLlamaTokenizer"),
    "GemmaTokenizer": lambda d: _sentencepiece_folder(d, "GemmaTokenizer", gemma=True),
    "GemmaTokenizer/llama file": lambda d: _sentencepiece_folder(d, "GemmaTokenizer"),
    "CohereTokenizer/llama file": lambda d: _sentencepiece_folder(d, "CohereTokenizer"),
    "Qwen2Tokenizer/llama file": lambda d: _sentencepiece_folder(d, "Qwen2Tokenizer"),
    "GPTNeoXTokenizer": lambda d: _byte_level_folder(d, "GPTNeoXTokenizer"),
    "GPT2Tokenizer/llama file": lambda d: _sentencepiece_folder(d, "GPT2Tokenizer"),
    # config.json's model type: Mistral / Phi-3 folders are TokenizersBackend, a Gemma folder without a class Gemma's
    "mistral model folder": lambda d: _sentencepiece_folder(d, "LlamaTokenizerFast", model_type="mistral"),
    "phi3 model folder": lambda d: _sentencepiece_folder(d, "LlamaTokenizer", model_type="phi3"),
    "gemma model folder, no class": lambda d: _sentencepiece_folder(d, None, model_type="gemma"),
    "qwen2 model folder, generic class": lambda d: _byte_level_folder(d, "PreTrainedTokenizerFast", "qwen2"),
}


@pytest.mark.parametrize("name", list(FOLDERS))
def test_ids_offsets_tokens_and_text_as_transformers(tmp_path, name):
    theirs, ours = _both(FOLDERS[name](tmp_path))
    _assert_same_tokenization(theirs, ours)


TEMPLATE = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
            "{% if add_generation_prompt %}[assistant]\n{% endif %}")
MESSAGES = [{"role": "user", "content": " the  cat sat 123"}, {"role": "assistant", "content": "日本 🙂\tdef f(x):"}]


@pytest.mark.parametrize("name", ["CodeLlamaTokenizer", "GemmaTokenizer/llama file", "GPTNeoXTokenizer"])
def test_chat_template_pairs_batches_and_bos_eos_flags_as_transformers(tmp_path, name):
    """apply_chat_template, padded pairs, truncation, and the fine-tuning recipe's ``add_eos_token = True``
    (CodeLlama's add_bos_token reads True: its post-processor keeps the BOS; GPTNeoX's file post-processor is
    replaced by "$A" at load)."""
    theirs, ours = _both(FOLDERS[name](tmp_path))
    for tok in (theirs, ours):
        tok.chat_template, tok.pad_token = TEMPLATE, tok.eos_token
    for prompt in (True, False):
        assert ours.apply_chat_template(MESSAGES, add_generation_prompt=prompt, tokenize=False) == \
            theirs.apply_chat_template(MESSAGES, add_generation_prompt=prompt, tokenize=False)
        assert ours.apply_chat_template(MESSAGES, add_generation_prompt=prompt, return_dict=False) == \
            theirs.apply_chat_template(MESSAGES, add_generation_prompt=prompt, return_dict=False)
    batch, pairs = [" hi there", "the  cat\n", "日本 12"], ["a dog", " b", ""]
    for options in ({"padding": True, "return_offsets_mapping": True}, {"truncation": True, "max_length": 5}):
        assert dict(ours(batch, pairs, **options)) == dict(theirs(batch, pairs, **options))
    for flag, value in (("add_eos_token", True), ("add_bos_token", False), ("add_bos_token", True)):
        setattr(theirs, flag, value), setattr(ours, flag, value)
        assert ours(batch)["input_ids"] == theirs(batch)["input_ids"]
        assert ours(batch, pairs)["input_ids"] == theirs(batch, pairs)["input_ids"]


@pytest.mark.parametrize("kwargs", [{"add_eos_token": True}, {"add_bos_token": True, "add_eos_token": True},
                                    {"add_prefix_space": False}])
def test_from_pretrained_arguments_as_transformers(tmp_path, kwargs):
    """``AutoTokenizer.from_pretrained(folder, add_eos_token=True)`` rebuilds the post-processor (minilora
    refused the argument); add_prefix_space=False changes CodeLlama's Metaspace."""
    theirs, ours = _both(FOLDERS["CodeLlamaTokenizer"](tmp_path), **kwargs)
    texts = _texts(theirs)[::4]
    assert ours(texts)["input_ids"] == theirs(texts)["input_ids"]
    assert ours.batch_decode(theirs(texts)["input_ids"]) == theirs.batch_decode(theirs(texts)["input_ids"])


def test_code_llama_infilling_as_transformers(tmp_path):
    """``<FILL_ME>`` in a text, ``tok(prefix, suffix=...)``, ``suffix_first``, batches, ``tokenize``, the infilling
    ids; and, as transformers, the normalizer the first infilling call leaves for the calls after it (minilora
    refused suffix= and read <FILL_ME> as one token)."""
    theirs, ours = _both(FOLDERS["CodeLlamaTokenizer"](tmp_path))
    for code in ["def f(<FILL_ME>):\n\treturn x", "def f(<FILL_ME>", "<FILL_ME>x = 1", "  x<FILL_ME>  y \n",
                 "a <s> b<FILL_ME>c"]:
        prefix, suffix = code.split("<FILL_ME>")
        calls = [lambda t: t(code, return_offsets_mapping=True), lambda t: t(code, add_special_tokens=False),
                 lambda t: t.encode(code), lambda t: t.tokenize(code), lambda t: t(" x <s> y")["input_ids"],
                 lambda t: t.decode(theirs(code)["input_ids"]), lambda t: t(prefix, suffix=suffix),
                 lambda t: t(prefix, suffix=suffix, suffix_first=True), lambda t: t([code, "q"]),
                 lambda t: t([prefix, prefix + "z"], suffix=[suffix, suffix])]
        for call in calls:
            want = call(theirs)
            assert (code, call(ours)) == (code, want)
    assert (ours.prefix_id, ours.middle_id, ours.suffix_id, ours.eot_id) == \
        (theirs.prefix_id, theirs.middle_id, theirs.suffix_id, theirs.eot_id)


def test_byte_tokenizer_bos_and_eos_flags_as_transformers(tmp_path):
    """``tok.add_eos_token = True`` on minilora's byte tokenizer adds <eos> (it was silently ignored; reading the
    flag raised AttributeError): as transformers' tokenizer for its saved folder, loaded with add_bos_token=True
    (the <bos> it adds), applies them; the folder saved after the change keeps them."""
    ours = ByteTokenizer()
    ours.save_pretrained(tmp_path / "saved")
    theirs, _ = _both(tmp_path / "saved", add_bos_token=True)
    texts, pairs = ["hi", "日本 x", ""], ["a", "b", "c"]
    for flag, value in ((None, None), ("add_eos_token", True), ("add_bos_token", False), ("add_eos_token", False),
                        ("add_bos_token", True)):
        if flag is not None:
            setattr(ours, flag, value), setattr(theirs, flag, value)
        assert (ours.add_bos_token, ours.add_eos_token) == (theirs.add_bos_token, theirs.add_eos_token)
        assert ours(texts)["input_ids"] == theirs(texts)["input_ids"]
        assert ours.encode("hey") == theirs.encode("hey")
        assert ours.tokenize("hé", add_special_tokens=True) == theirs.tokenize("hé", add_special_tokens=True)
        assert dict(ours(texts, pairs)) == dict(theirs(texts, pairs))
        assert ours(texts, return_offsets_mapping=True)["offset_mapping"] == \
            theirs(texts, return_offsets_mapping=True)["offset_mapping"]
        assert ours(["hello world"], truncation=True, max_length=4)["input_ids"] == \
            theirs(["hello world"], truncation=True, max_length=4)["input_ids"]
        ours.save_pretrained(tmp_path / "again")
        again, _ = _both(tmp_path / "again")
        assert again(texts)["input_ids"] == ours(texts)["input_ids"]


def test_saved_code_llama_folder_loads_back_as_code_llama(tmp_path):
    """save_pretrained names CodeLlamaTokenizer (minilora wrote PreTrainedTokenizerFast: loaded back, add_bos_token
    read False and <FILL_ME> was one token, in transformers and minilora)."""
    (tmp_path / "first").mkdir()
    theirs, ours = _both(FOLDERS["CodeLlamaTokenizer"](tmp_path / "first"))
    ours.save_pretrained(tmp_path / "saved")
    again_theirs, again_ours = _both(tmp_path / "saved")
    code = "def f(<FILL_ME>):\n\treturn x"
    for tok in (again_theirs, again_ours):
        assert (type(tok).__name__, tok.add_bos_token) == ("CodeLlamaTokenizer", True)
        assert tok(code)["input_ids"] == theirs(code)["input_ids"]
        assert tok(_texts(theirs))["input_ids"] == theirs(_texts(theirs))["input_ids"]
