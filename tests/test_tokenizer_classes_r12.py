"""Encoder, translation and speech tokenizer folders (T5, XLM-RoBERTa, CamemBERT, ALBERT, DeBERTa v2, BERT,
RoBERTa, mBART, NLLB, Whisper) tokenize as transformers 5 does.

transformers 5.25's T5Tokenizer, XLMRobertaTokenizer and BertTokenizer (DistilBERT's too) keep a tokenizer.json's
vocabulary and rebuild the rest from their own __init__: T5 and XLM-R keep only the file's SentencePiece charsmap
(no other normalizer), split at whitespace with a "▁" before each word and set their own post-processor; T5 adds
its <extra_id_N> sentinels; BERT's normalizer is tokenizer_config.json's do_lower_case / strip_accents /
tokenize_chinese_chars (not the file's), its call returns token_type_ids and it has no bos / eos token. minilora
ran the file as written: a T5 or XLM-R file with an NFKC normalizer gave other ids for 24 of 312 texts, a cased
BERT folder (do_lower_case false) whose file lowercases for 72, BERT pairs had no token_type_ids (240 of 312), a
T5 folder that lists no sentinels 100 tokens fewer; a folder without tokenizer_class but with config.json's model
type (t5, bert, xlm-roberta) ran as written too. CamemBERT is XLM-R's with its <s>NOTUSED... extra tokens (96
of 312 differed); ALBERT's normalizer is its do_lower_case / keep_accents (96), DeBERTa v2's its do_lower_case
and whitespace rules, with split_by_punct (its unk id and token_type_ids: all 312). RoBERTa (BART) is GPT-2's
byte-level pipeline with its own add_prefix_space / trim_offsets (a file that adds a prefix space: 188 of 312
texts had other ids).
mBART and NLLB mark a text with its language code (src_lang, text_target's tgt_lang; NLLB before the text unless
legacy_behaviour) and add their codes as special tokens: an NLLB folder gave other ids for all 312 texts, an
mBART one for 24 (its normalizer) and 25 special tokens fewer. Whisper starts each text with its prefix
(<|startoftranscript|>, the language's and task's tokens, <|notimestamps|>): a folder with a language and task
gave other ids for all 312. Every comparison is against transformers' AutoTokenizer on the same folder.
"""
import base64
import json
import struct
import warnings

import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

from minilora.tokenizer import from_pretrained as ml_tokenizer  # noqa: E402

CORPUS = ["The Cat sat on the mat", "hello world, the quick brown fox", "café naïve Ünïcode", "a\tb\nc  d",
          "def f(x):\n\treturn x + 1", "日本語 テキスト 中文", "12345 67 8.9", "HELLO there"] * 3
SENTINELS = [f"<extra_id_{i}>" for i in range(100)]
# special tokens at the start / middle / end, the mask token glued to a word, spaces, tabs and newlines, case,
# accents, CJK, emoji, compatibility characters (NFKC's: ligature, full-width, circled), no-break and zero-width
# spaces, the empty string; {s} / {e}: the folder's first and last special tokens, {m}: its mask token
PREFIXES = ["", " ", "  ", "\n", "{s}", " {s}"]
BODIES = ["the cat", "Hello  World", "café naïve", "日本 🙂", "x {s} y", "def f(x):\n\treturn 12345",
          "  indented\n    code", "", "x {m} y", "Ünï{m}", "ﬁne Ａ① ℌ", "über  Straße", "x\u00a0y\u3000z\u200bw"]
SUFFIXES = ["", " ", " {e}", "\n"]


def _texts(tok):
    fill = {"s": tok.all_special_tokens[0], "e": tok.all_special_tokens[-1], "m": tok.mask_token or "<none>"}
    return [(p + b + s).format(**fill) for p in PREFIXES for b in BODIES for s in SUFFIXES]


def _write(folder, tok, config, model_type=None):
    (folder / "tokenizer.json").write_text(tok.to_str())
    (folder / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    if model_type is not None:
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


# a SentencePiece charsmap that maps nothing (a double array of 256 empty units): what T5 and XLM-R keep of a
# file's normalizer
NOOP_CHARSMAP = base64.b64encode(struct.pack("<I", 1024) + bytes(1024)).decode()


def _unigram(special, normalizer):
    tok = tokenizers.Tokenizer(models.Unigram())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=200, special_tokens=special,
                                                            unk_token="<unk>", show_progress=False))
    return tok


def _t5_folder(folder, sentinels=True, model_type=None, charsmap=False):
    """A T5 file (Unigram, "$A </s>"); with ``sentinels`` the file and tokenizer_config.json list them (as
    t5-small's)."""
    normalizer = normalizers.Sequence([normalizers.Precompiled(base64.b64decode(NOOP_CHARSMAP)),
                                       normalizers.Lowercase()]) if charsmap else normalizers.NFKC()
    tok = _unigram(["<pad>", "</s>", "<unk>"], normalizer)
    if sentinels:
        tok.add_special_tokens(SENTINELS[::-1])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    config = {"tokenizer_class": None if model_type else "T5Tokenizer", "eos_token": "</s>", "unk_token": "<unk>",
              "pad_token": "<pad>"}
    if sentinels:
        config.update(extra_ids=100, additional_special_tokens=SENTINELS)
    return _write(folder, tok, config, model_type)


def _xlm_roberta_folder(folder, model_type=None, add_prefix_space=None):
    tok = _unigram(["<s>", "<pad>", "</s>", "<unk>"], normalizers.NFKC())
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    return _write(folder, tok, {"tokenizer_class": None if model_type else "XLMRobertaTokenizer", "bos_token": "<s>",
                                "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "sep_token": "</s>",
                                "cls_token": "<s>", "mask_token": "<mask>", "add_prefix_space": add_prefix_space},
                  model_type)


def _camembert_folder(folder, model_type=None):
    """A CamemBERT file: XLM-R's, its <unk> at position 3 (the class's unk_id is the unk token's place)."""
    tok = _unigram(["<s>", "<pad>", "</s>", "<unk>"], normalizers.NFKC())
    tok.add_special_tokens([tokenizers.AddedToken("<mask>", lstrip=True, special=True)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    return _write(folder, tok, {"tokenizer_class": None if model_type else "CamembertTokenizer", "bos_token": "<s>",
                                "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "sep_token": "</s>",
                                "cls_token": "<s>", "mask_token": "<mask>"}, model_type)


def _albert_folder(folder, template=True, **config):
    """An ALBERT file (Unigram, a normalizer other than the class's), with or without its "[CLS] $A [SEP]"."""
    tok = _unigram(["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"],
                   normalizers.Sequence([normalizers.Replace("``", '"'), normalizers.Lowercase()]))
    if template:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return _write(folder, tok, {"tokenizer_class": "AlbertTokenizer", "bos_token": "[CLS]", "eos_token": "[SEP]",
                                "unk_token": "<unk>", "pad_token": "<pad>", "sep_token": "[SEP]", "cls_token": "[CLS]",
                                "mask_token": "[MASK]", **config})


def _deberta_v2_folder(folder, model_type=None, **config):
    """A DeBERTa v3 file: Unigram with an NFKC normalizer, [CLS] / [SEP] at 1 / 2, [UNK] at 3."""
    tok = _unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]"], normalizers.NFKC())
    tok.add_special_tokens(["[MASK]"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    return _write(folder, tok, {"tokenizer_class": None if model_type else "DebertaV2Tokenizer", "bos_token": "[CLS]",
                                "eos_token": "[SEP]", "unk_token": "[UNK]", "pad_token": "[PAD]", "sep_token": "[SEP]",
                                "cls_token": "[CLS]", "mask_token": "[MASK]", **config}, model_type)


def _bert_folder(folder, tokenizer_class="BertTokenizer", model_type=None, file_lowercases=True, **config):
    """A WordPiece file; tokenizer_config.json's do_lower_case / strip_accents may say otherwise than the file."""
    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=file_lowercases)
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.BertPreTokenizer(), decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return _write(folder, tok, {"tokenizer_class": tokenizer_class, "unk_token": "[UNK]", "sep_token": "[SEP]",
                                "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]", **config},
                  model_type)


def _translation_folder(folder, tokenizer_class, model_type=None, mask=True, **config):
    """An mBART file (Unigram, its 25 language codes) or an NLLB one (BPE, three of its 202 codes: the others are
    added at load), each with its template for the default source language; ``mask``: the file has <mask>."""
    special = ["<s>", "<pad>", "</s>", "<unk>"]
    if tokenizer_class == "MBartTokenizer":
        tok, codes = _unigram(special, normalizers.NFKC()), list(MBART_LANGUAGES)
    else:
        tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
        tok.normalizer, tok.pre_tokenizer = normalizers.NFKC(), pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=special,
                                                            show_progress=False))
        codes = ["eng_Latn", "fra_Latn", "deu_Latn"]
    tok.add_special_tokens(codes)
    if mask:
        tok.add_special_tokens([tokenizers.AddedToken("<mask>", lstrip=True, special=True)])
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A </s> {codes[0]}", pair=f"$A $B </s> {codes[0]}",
        special_tokens=[("</s>", 2), (codes[0], tok.token_to_id(codes[0]))])
    return _write(folder, tok, {"tokenizer_class": None if model_type else tokenizer_class, "bos_token": "<s>",
                                "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "sep_token": "</s>",
                                "cls_token": "<s>", "mask_token": "<mask>" if mask else None, **config}, model_type)


def _roberta_folder(folder, tokenizer_class="RobertaTokenizer", model_type=None):
    """A byte-level file whose pre-tokenizer adds a prefix space and whose RoBERTa post-processor keeps the offsets'
    spaces, under a config that says neither (the class's defaults: no prefix space, offsets trimmed)."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.normalizer, tok.decoder = normalizers.NFC(), decoders.ByteLevel()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    special = ["<s>", "<pad>", "</s>", "<unk>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=380, special_tokens=special,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    tok.add_special_tokens([tokenizers.AddedToken("<mask>", lstrip=True, special=True)])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=False,
                                                      add_prefix_space=True)
    return _write(folder, tok, {"tokenizer_class": tokenizer_class, "bos_token": "<s>", "eos_token": "</s>",
                                "unk_token": "<unk>", "pad_token": "<pad>", "sep_token": "</s>", "cls_token": "<s>",
                                "mask_token": "<mask>"}, model_type)


WHISPER_LANGUAGES = ("en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur "
                     "hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si "
                     "km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln "
                     "ha ba jw su yue").split()


def _whisper_folder(folder, model_type=None, **config):
    """A Whisper file: byte-level BPE, <|startoftranscript|> and the 100 language tokens after it, the task and
    timestamp tokens, and the template for no language (what the folder's language / task change)."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=380, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    special = (["<|startoftranscript|>"] + [f"<|{code}|>" for code in WHISPER_LANGUAGES] +
               ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
                "<|notimestamps|>"])
    tok.add_special_tokens(special)
    tok.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(5)])
    prefix = ["<|startoftranscript|>", "<|notimestamps|>"]
    tok.post_processor = processors.TemplateProcessing(
        single=prefix + ["$A", "<|endoftext|>"], pair=prefix + ["$A", "$B", "<|endoftext|>"],
        special_tokens=[(t, tok.token_to_id(t)) for t in prefix + ["<|endoftext|>"]])
    end = "<|endoftext|>"
    return _write(folder, tok, {"tokenizer_class": None if model_type else "WhisperTokenizer", "bos_token": end,
                                "eos_token": end, "unk_token": end, "pad_token": end,
                                "additional_special_tokens": special, **config}, model_type)


MBART_LANGUAGES = ("ar_AR cs_CZ de_DE en_XX es_XX et_EE fi_FI fr_XX gu_IN hi_IN it_IT ja_XX kk_KZ ko_KR lt_LT lv_LV "
                   "my_MM ne_NP nl_XX ro_RO ru_RU si_LK tr_TR vi_VN zh_CN").split()
FOLDERS = {
    "T5Tokenizer": _t5_folder,
    "T5Tokenizer, no sentinels listed": lambda d: _t5_folder(d, sentinels=False),
    "t5 model folder, charsmap + lowercase": lambda d: _t5_folder(d, model_type="t5", charsmap=True),
    "XLMRobertaTokenizer": _xlm_roberta_folder,
    "XLMRobertaTokenizer, add_prefix_space false": lambda d: _xlm_roberta_folder(d, add_prefix_space=False),
    "xlm-roberta model folder": lambda d: _xlm_roberta_folder(d, model_type="xlm-roberta"),
    "CamembertTokenizer": _camembert_folder,
    "camembert model folder": lambda d: _camembert_folder(d, "camembert"),
    "AlbertTokenizer": _albert_folder,
    "AlbertTokenizer, keep_accents, cased, no template in the file": lambda d: _albert_folder(
        d, template=False, keep_accents=True, do_lower_case=False),
    "DebertaV2Tokenizer": _deberta_v2_folder,
    "deberta-v2 model folder, split_by_punct, lower case": lambda d: _deberta_v2_folder(
        d, "deberta-v2", split_by_punct=True, do_lower_case=True, add_prefix_space=False),
    "BertTokenizer": _bert_folder,
    "BertTokenizer, cased over a lowercasing file": lambda d: _bert_folder(d, do_lower_case=False),
    "BertTokenizer, strip_accents, no chinese chars": lambda d: _bert_folder(
        d, file_lowercases=False, do_lower_case=False, strip_accents=True, tokenize_chinese_chars=False),
    "bert model folder": lambda d: _bert_folder(d, tokenizer_class=None, model_type="bert"),
    "ElectraTokenizer (transformers' BertTokenizer)": lambda d: _bert_folder(d, "ElectraTokenizerFast"),
    "DistilBertTokenizer": lambda d: _bert_folder(d, "DistilBertTokenizer", do_lower_case=True),
    "RobertaTokenizer": _roberta_folder,
    "BartTokenizer": lambda d: _roberta_folder(d, "BartTokenizer"),
    "roberta model folder": lambda d: _roberta_folder(d, None, "roberta"),
    "MBartTokenizer": lambda d: _translation_folder(d, "MBartTokenizer", src_lang="ro_RO", tgt_lang="de_DE"),
    "mbart model folder, no mask token": lambda d: _translation_folder(d, "MBartTokenizer", "mbart", mask=False),
    "NllbTokenizer": lambda d: _translation_folder(d, "NllbTokenizer"),
    "NllbTokenizer, legacy_behaviour, no mask token": lambda d: _translation_folder(
        d, "NllbTokenizer", mask=False, legacy_behaviour=True, src_lang="fra_Latn"),
    "WhisperTokenizer, language and task": lambda d: _whisper_folder(d, language="spanish", task="transcribe"),
    "whisper model folder, language alias, timestamps": lambda d: _whisper_folder(
        d, "whisper", language="castilian", task="translate", predict_timestamps=True),
}


def _both(folder, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verbosity = transformers.logging.get_verbosity()  # (put back after: a level left at error changes
        transformers.logging.set_verbosity_error()        # later tests' transformers, e.g. disable_tqdm's default)
        try:
            return transformers.AutoTokenizer.from_pretrained(str(folder), **kwargs), ml_tokenizer(folder, **kwargs)
        finally:
            transformers.logging.set_verbosity(verbosity)


ATTRIBUTES = ("all_special_tokens", "all_special_ids", "bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
              "cls_token", "mask_token", "pad_token_id", "model_input_names", "padding_side", "truncation_side",
              "add_bos_token", "add_eos_token")


def _assert_same_tokenization(theirs, ours):
    texts = _texts(theirs)
    for add_special_tokens in (True, False):
        want = theirs(texts, texts[::-1], add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        have = ours(texts, texts[::-1], add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        assert sorted(have) == sorted(want)
        for key in want:  # (pairs: token_type_ids)
            for text, w, h in zip(texts, want[key], have[key]):
                assert (key, text, h) == (key, text, w)
        want = theirs(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        have = ours(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        for i, text in enumerate(texts):
            assert (text, have["input_ids"][i], have["offset_mapping"][i], have.word_ids(i)) == \
                (text, want["input_ids"][i], want["offset_mapping"][i], want.word_ids(i))
        for skip in (True, False):
            assert ours.batch_decode(want["input_ids"], skip_special_tokens=skip) == \
                theirs.batch_decode(want["input_ids"], skip_special_tokens=skip)
    assert [ours.tokenize(t) for t in texts[::3]] == [theirs.tokenize(t) for t in texts[::3]]
    assert [ours.convert_tokens_to_string(theirs.tokenize(t)) for t in texts[::3]] == \
        [theirs.convert_tokens_to_string(theirs.tokenize(t)) for t in texts[::3]]
    assert [(name, getattr(ours, name)) for name in ATTRIBUTES] == \
        [(name, getattr(theirs, name)) for name in ATTRIBUTES]
    assert len(ours) == len(theirs)
    options = {"padding": True, "truncation": True, "max_length": 9}
    assert dict(ours(texts[:24], texts[24:48], **options)) == dict(theirs(texts[:24], texts[24:48], **options))


@pytest.mark.parametrize("name", list(FOLDERS))
def test_ids_pairs_offsets_words_and_text_as_transformers(tmp_path, name):
    theirs, ours = _both(FOLDERS[name](tmp_path))
    _assert_same_tokenization(theirs, ours)


@pytest.mark.parametrize("folder, kwargs", [
    ("RobertaTokenizer", {"trim_offsets": False}),
    ("BertTokenizer", {"do_lower_case": False}),
    ("BertTokenizer", {"strip_accents": False, "tokenize_chinese_chars": False}),
    ("BertTokenizer", {"add_eos_token": True}),  # (BERT's own template stays: it has no eos token)
    ("XLMRobertaTokenizer", {"add_prefix_space": False}),
    ("T5Tokenizer, no sentinels listed", {"extra_ids": 5}),
    ("T5Tokenizer", {"add_bos_token": True}),  # (T5's "$A </s>" stays, add_bos_token reads True)
])
def test_from_pretrained_arguments_as_transformers(tmp_path, folder, kwargs):
    """``AutoTokenizer.from_pretrained(folder, do_lower_case=False)`` and the like: the class's __init__ arguments
    (minilora refused them)."""
    theirs, ours = _both(FOLDERS[folder](tmp_path), **kwargs)
    _assert_same_tokenization(theirs, ours)


def test_t5_sentinels_and_bert_flags_as_transformers(tmp_path):
    """T5's sentinels are special tokens (read whole in text, skipped on decode); setting add_eos_token on BERT
    replaces its template by transformers' bos / eos one, as there."""
    theirs, ours = _both(FOLDERS["T5Tokenizer, no sentinels listed"](tmp_path))
    text = "The <extra_id_0> sat on <extra_id_99> mat"
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]
    assert ours.decode(theirs(text)["input_ids"], skip_special_tokens=True) == \
        theirs.decode(theirs(text)["input_ids"], skip_special_tokens=True)
    (tmp_path / "bert").mkdir()
    theirs, ours = _both(FOLDERS["BertTokenizer"](tmp_path / "bert"))
    for tok in (theirs, ours):
        tok.add_bos_token = True
    assert dict(ours(["the cat", "hello"], ["a", "b"])) == dict(theirs(["the cat", "hello"], ["a", "b"]))


def test_a_unigram_class_over_a_wordpiece_file_is_refused(tmp_path):
    """T5Tokenizer over a file without Unigram scores: transformers fails with a TypeError deep inside; minilora
    names the problem."""
    _bert_folder(tmp_path, "T5Tokenizer")
    with pytest.raises(ValueError, match="Unigram model, which needs a vocabulary of pieces with scores"):
        ml_tokenizer(tmp_path)


@pytest.mark.parametrize("name", ["MBartTokenizer", "NllbTokenizer", "NllbTokenizer, legacy_behaviour, no mask token"])
def test_translation_languages_and_targets_as_transformers(tmp_path, name):
    """The translation tutorial's calls: ``tok(texts, text_target=...)`` marks the labels with tgt_lang (else
    src_lang), ``tok.src_lang = ...`` / ``tok.tgt_lang = ...`` between calls, prefix_tokens / suffix_tokens /
    cur_lang_code; a flag set by hand lasts until the next call (which puts the source template back), as there.
    minilora ran the file's template: no target language, and no src_lang attribute."""
    theirs, ours = _both(FOLDERS[name](tmp_path))
    german, french = ("de_DE", "fr_XX") if name == "MBartTokenizer" else ("deu_Latn", "fra_Latn")

    def calls(tok):
        out = [dict(tok(["hello world", "the cat"], text_target=["café", "x"])), dict(tok(text_target="hi there")),
               dict(tok(["a b", "c"], ["d", "e f"])), tok.src_lang, tok.tgt_lang]
        tok.src_lang = german
        out += [tok("a b")["input_ids"], tok.cur_lang_code, tok.prefix_tokens, tok.suffix_tokens]
        tok.tgt_lang = french
        out.append(dict(tok("a b", text_target="c d", padding="max_length", max_length=6)))
        tok.add_eos_token = True
        out += [json.loads(tok.backend_tokenizer.post_processor.__getstate__()), tok("a b")["input_ids"]]
        return out
    assert calls(ours) == calls(theirs)


@pytest.mark.parametrize("name", ["BertTokenizer, cased over a lowercasing file", "T5Tokenizer, no sentinels listed",
                                  "NllbTokenizer, legacy_behaviour, no mask token",
                                  "WhisperTokenizer, language and task"])
def test_saved_folder_loads_back_as_the_same_class(tmp_path, name):
    """save_pretrained names the class and its __init__ arguments (do_lower_case, src_lang, Whisper's language...):
    minilora wrote PreTrainedTokenizerFast, which transformers runs as written: a saved BERT folder lost its
    token_type_ids, an NLLB one its language codes and src_lang."""
    (tmp_path / "first").mkdir()
    theirs, ours = _both(FOLDERS[name](tmp_path / "first"))
    if name.startswith("Nllb"):
        ours.src_lang = theirs.src_lang = "deu_Latn"
    if name.startswith("Whisper"):
        ours.set_prefix_tokens(language="german", task="translate")
        theirs.set_prefix_tokens(language="german", task="translate")
    ours.save_pretrained(tmp_path / "saved")
    texts = _texts(theirs)[::5]
    again = _both(tmp_path / "saved")
    assert (type(again[0]), type(again[1])) == (type(theirs), type(ours))
    for tok in again:
        assert dict(tok(texts, texts[::-1], text_target=texts)) == dict(theirs(texts, texts[::-1], text_target=texts))
        assert (len(tok), tok.all_special_tokens) == (len(theirs), theirs.all_special_tokens)


@pytest.mark.parametrize("name", ["WhisperTokenizer, language and task",
                                  "whisper model folder, language alias, timestamps"])
def test_whisper_prefix_tokens_and_decode_as_transformers(tmp_path, name):
    """The Whisper fine-tuning tutorial's calls: labels start with the prefix tokens of tokenizer_config.json's
    language / task (or from_pretrained's), ``set_prefix_tokens``, ``get_decoder_prompt_ids``, an unknown
    language's error; decode drops timestamps' text, and with skip_special_tokens a single sequence's prompt.
    minilora ran the file's template: no language or task token, and no prefix_tokens / set_prefix_tokens."""
    theirs, ours = _both(FOLDERS[name](tmp_path))

    def calls(tok):
        start, prompt = tok.convert_tokens_to_ids("<|startoftranscript|>"), tok.convert_tokens_to_ids("<|startofprev|>")
        text = tok("the cat <|0.04|>", add_special_tokens=False)["input_ids"]
        ids = [prompt, 50, 60, start] + text + [tok.eos_token_id]
        out = [tok("hello world <|0.02|> x")["input_ids"], tok.prefix_tokens, tok.decode(ids),
               tok.decode(ids, skip_special_tokens=True), tok.batch_decode([ids, ids[3:]], skip_special_tokens=True),
               tok.get_decoder_prompt_ids(task="translate", language="de"), tok("a b", text_target="c")["labels"]]
        tok.set_prefix_tokens(language="french", predict_timestamps=True)
        out.append(tok(["a b", "c"])["input_ids"])
        with pytest.raises(ValueError) as error:
            tok.set_prefix_tokens(language="klingon")
        return out + [str(error.value)]
    assert calls(ours) == calls(theirs)
