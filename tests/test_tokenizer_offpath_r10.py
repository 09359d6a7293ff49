"""A Llama tokenizer folder tokenizes as transformers 5 tokenizes it.

transformers 5's LlamaTokenizer does not run a tokenizer.json's pipeline as written: it keeps the BPE vocabulary,
merges, post-processor and added tokens and sets the normalizer (none), pre-tokenizer (Metaspace, "▁" before the
first piece only), decoder and BPE options (byte fallback, no unk_token) itself. minilora ran the file as written:
"<s>user: hi" gave "<s>", "▁", "user" (transformers: "<s>", "user"), a leading space two "▁", a character with no
token <unk> (transformers drops it) -- silently other ids, so other losses and generations. Each comparison here
is against transformers' AutoTokenizer on the same folder.
"""
import json
import warnings

import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from minilora.tokenizer import from_pretrained as ml_tokenizer  # noqa: E402

CORPUS = ["the cat sat on the mat", "a dog ran in the park", "hello world, the quick brown fox", "café naïve",
          "a\tb\nc  d", "it's done ."] * 5
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]

# ~300 texts: special tokens at the start / middle / end, with and without spaces around them, leading, double
# and trailing spaces, newlines and tabs, accents, CJK and emoji (byte fallback), the empty string
PREFIXES = ["", " ", "  ", "\n", "<s>", "<s> ", " <s>", "</s>"]
BODIES = ["the cat", "hello  world", "café naïve", "日本", "emoji 🙂", "a\tb\nc", "x <s> y", ""]
SUFFIXES = ["", " ", "</s>", " </s>", "\n"]
TEXTS = [p + b + s for p in PREFIXES for b in BODIES for s in SUFFIXES]


def _llama_folder(folder, byte_tokens=True, post_processor=True, **config):
    """A Llama 2 style tokenizer.json (byte-fallback BPE behind a Prepend("▁") + Replace(" ", "▁") normalizer,
    "<s> $A" post-processor) with tokenizer_class LlamaTokenizerFast and ``config`` in tokenizer_config.json."""
    from tokenizers import decoders, normalizers, processors, trainers
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    special = ["<unk>", "<s>", "</s>"] + (BYTE_TOKENS if byte_tokens else [])
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=len(special) + 80, special_tokens=special,
                                                        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    spec = json.loads(tok.to_str())  # the byte tokens are vocabulary, not added tokens (as in Llama 2's file)
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in BYTE_TOKENS]
    if not post_processor:
        spec["post_processor"] = None
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizerFast",
         **config}))
    return folder


def _both(folder, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.AutoTokenizer.from_pretrained(str(folder), **kwargs), ml_tokenizer(folder, **kwargs)


def _assert_same_tokenization(theirs, ours, texts=TEXTS):
    for add_special_tokens in (True, False):
        expected = theirs(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        got = ours(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        for text, want, have, want_offsets, have_offsets in zip(texts, expected["input_ids"], got["input_ids"],
                                                                expected["offset_mapping"], got["offset_mapping"]):
            assert (text, have) == (text, want)
            assert (text, have_offsets) == (text, want_offsets)
            assert ours.convert_ids_to_tokens(have) == theirs.convert_ids_to_tokens(want)
        for skip in (True, False):
            assert ours.batch_decode(got["input_ids"], skip_special_tokens=skip) == \
                theirs.batch_decode(expected["input_ids"], skip_special_tokens=skip)
    assert [ours.tokenize(t) for t in texts] == [theirs.tokenize(t) for t in texts]


CONFIGS = {"default": {}, "legacy": {"legacy": True}, "no_prefix_space": {"add_prefix_space": False},
           "bos_eos_flags": {"add_bos_token": True, "add_eos_token": True},
           "no_post_processor": {"post_processor": False, "add_bos_token": True}}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_llama_tokenizer_ids_tokens_offsets_and_text_as_transformers(tmp_path, name):
    """legacy=False's Metaspace "first" (no "▁" after a special token), legacy=True's "always", add_prefix_space
    False's "never" (and no Strip on decode); add_bos_token/add_eos_token in tokenizer_config.json change
    nothing in transformers 5 (the file's post-processor stays; a file without one gets no BOS)."""
    theirs, ours = _both(_llama_folder(tmp_path, **CONFIGS[name]))
    _assert_same_tokenization(theirs, ours)


def test_same_file_as_a_generic_tokenizer_runs_as_written(tmp_path):
    """Only the LlamaTokenizer class rebuilds the pipeline: PreTrainedTokenizerFast runs the file as written (and
    the Llama folder differs from it, as in transformers)."""
    llama, generic = tmp_path / "llama", tmp_path / "generic"
    llama.mkdir(), generic.mkdir()
    _llama_folder(llama), _llama_folder(generic, tokenizer_class="PreTrainedTokenizerFast")
    theirs, ours = _both(generic)
    _assert_same_tokenization(theirs, ours, TEXTS[:60])
    assert ours("<s>the cat")["input_ids"] != ml_tokenizer(llama)("<s>the cat")["input_ids"]
    theirs, ours = _both(llama)
    assert ours("<s>the cat")["input_ids"] == theirs("<s>the cat")["input_ids"]


def test_characters_without_a_token_are_dropped_as_transformers(tmp_path):
    """No byte tokens in the vocabulary: transformers' rebuilt BPE has no unk_token, so "日本" or an emoji vanish
    (minilora gave <unk>, id 0, and other offsets)."""
    theirs, ours = _both(_llama_folder(tmp_path, byte_tokens=False))
    _assert_same_tokenization(theirs, ours)
    assert ours.unk_token_id not in ours("x 日本 🙂", add_special_tokens=False)["input_ids"]


def test_from_pretrained_legacy_and_add_prefix_space_arguments(tmp_path):
    """``AutoTokenizer.from_pretrained(folder, legacy=True)`` (the Llama 2 tutorials' argument) overrides the
    config; minilora refused both arguments."""
    folder = _llama_folder(tmp_path)
    for kwargs in ({"legacy": True}, {"add_prefix_space": False}, {"legacy": False}):
        theirs, ours = _both(folder, **kwargs)
        _assert_same_tokenization(theirs, ours, TEXTS[::7])


def test_chat_template_pairs_and_batches_as_transformers(tmp_path):
    """A chat template that writes "<s>" before each turn, text pairs, padded and truncated batches."""
    theirs, ours = _both(_llama_folder(tmp_path))
    template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}assistant:{% endif %}")
    for tok in (theirs, ours):
        tok.chat_template, tok.pad_token = template, tok.eos_token
    messages = [{"role": "user", "content": "the cat sat"}, {"role": "assistant", "content": " a dog"}]
    for prompt in (True, False):
        assert ours.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=False) == \
            theirs.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=False)
        assert ours.apply_chat_template(messages, add_generation_prompt=prompt, return_dict=False) == \
            theirs.apply_chat_template(messages, add_generation_prompt=prompt, return_dict=False)
    batch, pairs = ["<s>hi there", " the  cat sat on the mat", "日本"], ["a dog", "<s> b", ""]
    for options in ({"padding": True}, {"padding": "max_length", "max_length": 12, "truncation": True},
                    {"truncation": True, "max_length": 4}):
        assert dict(ours(batch, **options)) == dict(theirs(batch, **options))
        assert dict(ours(batch, pairs, **options)) == dict(theirs(batch, pairs, **options))


def test_unigram_file_under_the_llama_class_as_transformers(tmp_path):
    """transformers passes a Unigram file's pieces to LlamaTokenizer's BPE with no merges: single characters."""
    from tokenizers import normalizers, processors, trainers
    tok = tokenizers.Tokenizer(tokenizers.models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=60, special_tokens=["<unk>", "<s>", "</s>"],
                                                            unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    theirs, ours = _both(tmp_path)
    _assert_same_tokenization(theirs, ours, TEXTS[::5])


def test_clean_up_tokenization_spaces_as_transformers(tmp_path):
    """transformers 5 ignores clean_up_tokenization_spaces=True for a BPE model (with a warning) and applies it
    to others (WordPiece); tokenizer_config.json's value is decode's default. minilora raised
    NotImplementedError for True."""
    theirs, ours = _both(_llama_folder(tmp_path))
    ids = theirs("hello , world . it 's done !")["input_ids"]
    with pytest.warns(UserWarning, match="Ignoring clean_up_tokenization_spaces=True for BPE"):
        assert ours.decode(ids, clean_up_tokenization_spaces=True) == \
            theirs.decode(ids, clean_up_tokenization_spaces=True)
    from tokenizers import decoders, pre_tokenizers, trainers
    wordpiece = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
    wordpiece.pre_tokenizer, wordpiece.decoder = pre_tokenizers.BertPreTokenizer(), decoders.WordPiece()
    wordpiece.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=80, special_tokens=["[UNK]"],
                                                                     show_progress=False))
    folder = tmp_path / "wordpiece"
    folder.mkdir()
    wordpiece.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              "clean_up_tokenization_spaces": True}))
    theirs, ours = _both(folder)
    ids = theirs("the cat , it's done .")["input_ids"]
    for clean_up in (None, True, False):
        assert ours.decode(ids, clean_up_tokenization_spaces=clean_up) == \
            theirs.decode(ids, clean_up_tokenization_spaces=clean_up)
    assert ours.decode(ids) != ours.decode(ids, clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("tokenizer_class", ["LlamaTokenizerFast", "PreTrainedTokenizerFast"])
def test_setting_add_eos_token_rebuilds_the_post_processor_as_transformers(tmp_path, tokenizer_class):
    """The fine-tuning recipe's ``tokenizer.add_eos_token = True``: transformers 5 rebuilds the post-processor
    from both flags (add_bos_token reads False after loading, so the file's BOS goes); minilora ignored it."""
    theirs, ours = _both(_llama_folder(tmp_path, tokenizer_class=tokenizer_class))
    assert (ours.add_bos_token, ours.add_eos_token) == (theirs.add_bos_token, theirs.add_eos_token)
    texts, pairs = ["the cat", "<s>a dog", ""], ["hi", "x", "y"]
    for flag, value in (("add_eos_token", True), ("add_bos_token", True), ("add_eos_token", False),
                        ("add_bos_token", False)):
        setattr(theirs, flag, value), setattr(ours, flag, value)
        assert ours(texts)["input_ids"] == theirs(texts)["input_ids"]
        assert ours(texts, pairs)["input_ids"] == theirs(texts, pairs)["input_ids"]
        assert ours(texts, return_offsets_mapping=True)["offset_mapping"] == \
            theirs(texts, return_offsets_mapping=True)["offset_mapping"]
