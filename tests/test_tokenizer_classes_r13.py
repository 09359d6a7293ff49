"""More tokenizer classes tokenize as transformers 5.25 does; a class minilora does not implement is refused.

Surveyed against transformers' AutoTokenizer, a tiny folder per tokenizer class it ships (a tokenizer.json of the
class's model kind and a tokenizer_config.json naming the class and its default special tokens), 312 texts each:
ids, pairs, token_type_ids, offsets, decode, special tokens, padding and truncation. Before this round a folder of
a class minilora had no rule for ran its file as written: XLNet, Pegasus, MPNet, Funnel, BigBird, CLIP, DeBERTa
(v1), mBART-50, GPT-1, XGLM, RemBERT, FNet, ConvBERT, Splinter, SigLIP 2, HerBERT, LASR gave other ids or special
tokens for 312 of 312 texts (VideoPrism 276, Parakeet 107, Reformer 96), with no error. Those now follow their
class's __init__ (XLNet: special tokens at the end, left padding; Pegasus: its <mask_1> and <unk_2>..<unk_102>
tokens; MPNet: BERT's WordPiece under RoBERTa's template; CLIP: "</w>" word ends; Splinter: its question token in
pairs; DPR: lower case whatever the folder says; Parakeet / LASR: CTC decoding). The classes still without a rule
(Marian and the other SentencePiece or Python tokenizers, LayoutLM v2 / v3, LUKE, SeamlessM4T, ...) are refused by
name, where minilora tokenized them differently without a word. A Mistral folder with only tekken.json (no
tokenizer.json) loads as transformers converts it without mistral-common (minilora found no tokenizer file).
"""
import base64
import json
import pathlib
import re

import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from test_tokenizer_classes_r12 import CORPUS, _assert_same_tokenization, _both, _unigram, _write  # noqa: E402

from minilora import tokenizer as ml  # noqa: E402
from minilora.tokenizer import from_pretrained as ml_tokenizer  # noqa: E402

FAIRSEQ = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "sep_token": "</s>",
           "cls_token": "<s>", "mask_token": "<mask>"}


def _config(tokenizer_class, model_type, **config):
    return {"tokenizer_class": None if model_type else tokenizer_class, **config}


def _xlnet_folder(folder, model_type=None, listed=True, **config):
    """An XLNet file: Unigram with <unk> first, its <eod> / <eop>; ``listed``: tokenizer_config.json lists them."""
    tok = _unigram(["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>"],
                   normalizers.NFKC())
    tok.post_processor = processors.TemplateProcessing(single="$A <sep> <cls>", pair="$A <sep> $B <sep> <cls>",
                                                       special_tokens=[("<sep>", 4), ("<cls>", 3)])
    extra = {"additional_special_tokens": ["<eop>", "<eod>"]} if listed else {}
    return _write(folder, tok, _config("XLNetTokenizer", model_type, **{**FAIRSEQ, "sep_token": "<sep>",
                                                                       "cls_token": "<cls>"}, **extra, **config),
                  model_type)


PEGASUS_UNKS = [f"<unk_{i}>" for i in range(2, 103)]


def _pegasus_folder(folder, model_type=None, listed=True):
    """A Pegasus file: <pad> </s> <mask_1> <mask_2> <unk_2>..<unk_102> <unk>, then the pieces (pegasus-large's
    layout); ``listed``: tokenizer_config.json lists <mask_1> and the placeholders, as the Hub's does."""
    tok = _unigram(["<pad>", "</s>", "<mask_1>", "<mask_2>", *PEGASUS_UNKS, "<unk>"], normalizers.NFKC())
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A $B </s>",
                                                       special_tokens=[("</s>", 1)])
    extra = {"additional_special_tokens": ["<mask_1>", *PEGASUS_UNKS], "mask_token_sent": "<mask_1>",
             "offset": 103} if listed else {}
    return _write(folder, tok, _config("PegasusTokenizer", model_type, eos_token="</s>", unk_token="<unk>",
                                       pad_token="<pad>", mask_token="<mask_2>", **extra), model_type)


def _wordpiece(special, lowercase=True):
    tok = tokenizers.Tokenizer(models.WordPiece(unk_token=special[1]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.BertPreTokenizer(), decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=special,
                                                              show_progress=False))
    return tok


def _mpnet_folder(folder, model_type=None, **config):
    """An MPNet file (mpnet-base's layout: <s> <pad> </s> <unk> first, [UNK] the unknown token, <mask> last) with
    BERT's template, as a converted file may have."""
    tok = _wordpiece(["<s>", "[UNK]", "<pad>", "</s>", "<unk>"], lowercase=False)
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.BertProcessing(("</s>", 3), ("<s>", 0))
    return _write(folder, tok, _config("MPNetTokenizer", model_type, **{**FAIRSEQ, "unk_token": "[UNK]"}, **config),
                  model_type)


def _funnel_folder(folder, model_type=None):
    tok = _wordpiece(["<pad>", "<unk>", "<cls>", "<sep>", "<mask>", "<s>", "</s>"])
    tok.post_processor = processors.BertProcessing(("<sep>", 3), ("<cls>", 2))
    return _write(folder, tok, _config("FunnelTokenizer", model_type, do_lower_case=False), model_type)


def _bert_like_folder(folder, tokenizer_class, model_type=None):
    tok = _wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return _write(folder, tok, _config(tokenizer_class, model_type, unk_token="[UNK]", sep_token="[SEP]",
                                       pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]"), model_type)


def _splinter_folder(folder, **config):
    """A Splinter file (BERT's WordPiece) whose vocabulary lacks the question token: the class adds it."""
    return _write(folder, _wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
                  {"tokenizer_class": "SplinterTokenizer", **config})


def _siglip2_folder(folder):
    """A Gemma-style file (byte-fallback BPE over "▁" words) under Siglip2Tokenizer."""
    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer, tok.pre_tokenizer = normalizers.Replace(" ", "▁"), pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=[
        "<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{i:02X}>" for i in range(256)], show_progress=False))
    return _write(folder, tok, {"tokenizer_class": "Siglip2Tokenizer"})


def _byte_level(special, suffix=None, prefix_space=False):
    """A byte-level BPE file; ``suffix``: its words end with it (CLIP's "</w>")."""
    ends = {"end_of_word_suffix": suffix} if suffix else {}
    tok = tokenizers.Tokenizer(models.BPE(**ends))
    tok.normalizer, tok.decoder = normalizers.NFC(), decoders.ByteLevel()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=420, special_tokens=special,
                                                        **ends, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    return tok


def _clip_folder(folder, model_type=None):
    tok = _byte_level(["<|startoftext|>", "<|endoftext|>"], suffix="</w>")
    return _write(folder, tok, _config("CLIPTokenizer", model_type, unk_token="<|endoftext|>",
                                       bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                       pad_token="<|endoftext|>"), model_type)


def _deberta_folder(folder, model_type=None, mask=True):
    """A DeBERTa (v1) file; without ``mask`` the class adds its [MASK], taking the spaces before it."""
    tok = _byte_level(["[PAD]", "[CLS]", "[SEP]", "[UNK]"] + ["[MASK]"] * mask, prefix_space=True)
    return _write(folder, tok, _config("DebertaTokenizer", model_type, bos_token="[CLS]", eos_token="[SEP]",
                                       unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                                       mask_token="[MASK]" if mask else None), model_type)


def _bpe_with_suffix(folder, tokenizer_class, special, **config):
    """GPT-1 / HerBERT: a word-level BPE whose words end with "</w>"."""
    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    tok.normalizer, tok.pre_tokenizer = normalizers.NFKC(), pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=special,
                                                        end_of_word_suffix="</w>", show_progress=False))
    return _write(folder, tok, {"tokenizer_class": tokenizer_class, **config})


MBART50_CODES = ("ar_AR cs_CZ de_DE en_XX es_XX et_EE fi_FI fr_XX gu_IN hi_IN it_IT ja_XX kk_KZ ko_KR lt_LT lv_LV "
                 "my_MM ne_NP nl_XX ro_RO ru_RU si_LK tr_TR vi_VN zh_CN af_ZA az_AZ bn_IN fa_IR he_IL hr_HR id_ID "
                 "ka_GE km_KH mk_MK ml_IN mn_MN mr_IN pl_PL ps_AF pt_XX sv_SE sw_KE ta_IN te_IN th_TH tl_XX uk_UA "
                 "ur_PK xh_ZA gl_ES sl_SI").split()


def _mbart50_folder(folder, **config):
    """A converted mBART-50 file: <s> <pad> </s> <unk>, the pieces, the 52 language codes and <mask> in its
    Unigram vocabulary; the file's template for en_XX."""
    tok = _unigram(["<s>", "<pad>", "</s>", "<unk>"], normalizers.NFKC())
    spec = json.loads(tok.to_str())
    spec["model"]["vocab"] += [[code, 0.0] for code in MBART50_CODES] + [["<mask>", 0.0]]
    tok = tokenizers.Tokenizer.from_str(json.dumps(spec))
    tok.add_special_tokens(MBART50_CODES + ["<mask>"])
    en = tok.token_to_id("en_XX")
    tok.post_processor = processors.TemplateProcessing(single="en_XX $A </s>", pair="en_XX $A $B </s>",
                                                       special_tokens=[("en_XX", en), ("</s>", 2)])
    return _write(folder, tok, {"tokenizer_class": "MBart50Tokenizer", **FAIRSEQ, **config})


def _sentencepiece_like(folder, tokenizer_class, special, **config):
    return _write(folder, _unigram(special, normalizers.NFKC()), {"tokenizer_class": tokenizer_class, **config})


FOLDERS = {
    "XLNetTokenizer": _xlnet_folder,
    "xlnet model folder, lower case, extra tokens not listed": lambda d: _xlnet_folder(
        d, "xlnet", listed=False, do_lower_case=True),
    "PegasusTokenizer": _pegasus_folder,
    "pegasus model folder, placeholders not listed": lambda d: _pegasus_folder(d, "pegasus", listed=False),
    "MPNetTokenizer": _mpnet_folder,
    "mpnet model folder, cased": lambda d: _mpnet_folder(d, "mpnet", do_lower_case=False),
    "FunnelTokenizer": _funnel_folder,
    "FNetTokenizer (ALBERT's, the file as written)": lambda d: _sentencepiece_like(
        d, "FNetTokenizer", ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"], do_lower_case=False),
    "funnel model folder": lambda d: _funnel_folder(d, "funnel"),
    "ConvBertTokenizer": lambda d: _bert_like_folder(d, "ConvBertTokenizer"),
    "BigBirdTokenizer": lambda d: _sentencepiece_like(d, "BigBirdTokenizer",
                                                      ["<pad>", "</s>", "<s>", "<unk>", "[SEP]", "[MASK]", "[CLS]"]),
    "DebertaTokenizer": _deberta_folder,
    "deberta model folder, [MASK] not in the file": lambda d: _deberta_folder(d, "deberta", mask=False),
    "CLIPTokenizer": _clip_folder,
    "clip model folder": lambda d: _clip_folder(d, "clip"),
    "MBart50Tokenizer": lambda d: _mbart50_folder(d, src_lang="ro_RO", tgt_lang="de_DE"),
    "OpenAIGPTTokenizer": lambda d: _bpe_with_suffix(d, "OpenAIGPTTokenizer", ["<unk>", "<pad>"], pad_token="<pad>"),
    "HerbertTokenizer": lambda d: _bpe_with_suffix(d, "HerbertTokenizer", ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]),
    "XGLMTokenizer": lambda d: _sentencepiece_like(d, "XGLMTokenizer", ["<s>", "<pad>", "</s>", "<unk>"]),
    "RemBertTokenizer": lambda d: _sentencepiece_like(d, "RemBertTokenizer",
                                                      ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]),
    "BarthezTokenizer": lambda d: _sentencepiece_like(d, "BarthezTokenizer", ["<s>", "<pad>", "</s>", "<unk>"]),
    "BlenderbotTokenizer": lambda d: _write(d, _byte_level(["<s>", "<pad>", "</s>", "<unk>"]),
                                            {"tokenizer_class": "BlenderbotTokenizer"}),
    "SplinterTokenizer": _splinter_folder,
    "SplinterTokenizer, padding_side left": lambda d: _splinter_folder(d, padding_side="left"),
    "DPRQuestionEncoderTokenizer (lower case whatever the folder says)": lambda d: _write(
        d, _wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
        {"tokenizer_class": "DPRQuestionEncoderTokenizer", "do_lower_case": False}),
    "Siglip2Tokenizer": _siglip2_folder,
    "WhisperTokenizer, a file without its prefix tokens": lambda d: _write(d, _byte_level(["<|endoftext|>"]), {
        "tokenizer_class": "WhisperTokenizer", "pad_token": "<|endoftext|>"}),
    "ParakeetTokenizer (the file as written)": lambda d: _write(d, _byte_level(["<pad>", "<unk>", "<s>", "</s>"]), {
        "tokenizer_class": "ParakeetTokenizer", "pad_token": "<pad>", "unk_token": "<unk>"}),
    "LasrTokenizer": lambda d: _sentencepiece_like(d, "LasrTokenizer", ["<pad>", "</s>", "<unk>"], extra_ids=3),
    "VideoPrismTokenizer": lambda d: _sentencepiece_like(d, "VideoPrismTokenizer", ["<pad>", "</s>", "<unk>"]),
    "NougatTokenizer": lambda d: _write(d, _byte_level(["<s>", "<pad>", "</s>", "<unk>"]),
                                        {"tokenizer_class": "NougatTokenizer"}),
    "ReformerTokenizer": lambda d: _sentencepiece_like(d, "ReformerTokenizer", ["<unk>", "</s>", "<pad>"],
                                                       pad_token="<pad>"),
}


@pytest.mark.parametrize("name", list(FOLDERS))
def test_ids_pairs_offsets_words_and_text_as_transformers(tmp_path, name):
    theirs, ours = _both(FOLDERS[name](tmp_path))
    _assert_same_tokenization(theirs, ours)


def test_xlnet_pads_left_and_pad_pads_token_type_ids_as_transformers(tmp_path):
    """XLNet pads on the left, its <cls> of type id 2 last (its __init__'s padding type id 3 is reset to 0 by the
    base class); ``tok.pad`` pads token_type_ids with pad_token_type_id (minilora left them unpadded: rows of other
    lengths than input_ids'); convert_tokens_to_ids gives the unk id for a string that is no token (None before:
    Whisper's prefix then failed to load where its tokens are missing)."""
    theirs, ours = _both(_xlnet_folder(tmp_path))
    texts, pairs = ["the cat", "hello world, the quick brown fox", ""], ["a b", "", "x"]

    def calls(tok):
        rows = tok(texts, pairs, return_token_type_ids=True)
        return [dict(tok(texts, pairs, padding=True, return_token_type_ids=True)),
                dict(tok(texts, padding="max_length", max_length=12, truncation=True, return_token_type_ids=True)),
                dict(tok.pad([{key: rows[key][i] for key in rows} for i in range(3)])), tok.pad_token_type_id,
                tok.convert_tokens_to_ids(["nope", "<mask>"]), tok.convert_tokens_to_ids("<nope>")]
    assert calls(ours) == calls(theirs)
    (tmp_path / "bert").mkdir()
    theirs, ours = _both(_bert_like_folder(tmp_path / "bert", "BertTokenizer"))
    rows = theirs(texts, pairs)
    features = [{key: rows[key][i] for key in rows} for i in range(3)]
    assert dict(ours.pad(features, padding_side="left")) == dict(theirs.pad(features, padding_side="left"))


def test_translation_and_decode_classes_as_transformers(tmp_path):
    """mBART-50's source code before the text, text_target's tgt_lang, ``tok.src_lang = ...``; CLIP's and GPT-1's
    decode turn the "</w>" word ends into spaces; Parakeet's and LASR's read CTC output (a run of one id once, the
    padding left out)."""
    theirs, ours = _both(_mbart50_folder(tmp_path, src_lang="fr_XX"))

    def calls(tok):
        out = [dict(tok(["hello world", "the cat"], text_target=["café", "x"])), tok.src_lang, tok.tgt_lang]
        tok.src_lang = "de_DE"
        return out + [tok("a b")["input_ids"], tok.cur_lang_code_id, tok.lang_code_to_id, tok.prefix_tokens,
                      tok.suffix_tokens]
    assert calls(ours) == calls(theirs)
    for name in ("CLIPTokenizer", "OpenAIGPTTokenizer", "ParakeetTokenizer (the file as written)", "LasrTokenizer"):
        (tmp_path / name).mkdir()
        theirs, ours = _both(FOLDERS[name](tmp_path / name))
        ids = theirs(["Hello  World, the cat!", "def f(x):\n\treturn 12345"])["input_ids"]
        ids = [[i for i in row for _ in range(2)] + [theirs.pad_token_id] + row for row in ids]  # (CTC's runs)
        assert [ours.decode(row) for row in ids] == [theirs.decode(row) for row in ids]
        assert ours.batch_decode(ids, skip_special_tokens=True) == theirs.batch_decode(ids, skip_special_tokens=True)


def test_nougat_backend_settings_and_encode_as_transformers(tmp_path):
    """Nougat's __init__ leaves its backend cutting and padding to 4096: the backend reads so, while encode and a
    call without padding give the text's own ids, as there."""
    theirs, ours = _both(FOLDERS["NougatTokenizer"](tmp_path))
    text = "Table 12: (a) x=1.5 -- see [3]...\n\nSPL1T-TH1S-Pl3A5E next"
    assert (ours.backend_tokenizer.padding, ours.backend_tokenizer.truncation) == \
        (theirs.backend_tokenizer.padding, theirs.backend_tokenizer.truncation)
    assert (ours.encode(text), ours.encode(text, text)) == (theirs.encode(text), theirs.encode(text, text))
    assert ours.decode(theirs.encode(text)) == theirs.decode(theirs.encode(text))


# --- Mistral's tekken.json ---------------------------------------------------------------------------------
TEKKEN_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
                  r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN_WORDS = ("th", "he", "the", " the", " c", "ca", "at", " cat", "ll", "llo", "hello", "or", "wor", " world",
                "ld", "é", "café", "  ", "\n\t")


def _tekken_folder(folder, model_type="mistral", old_format=False, **config):
    """A tekken.json as Mistral ships it (Mistral NeMo, Small 3): the 256 bytes and merged words ranked, the
    special tokens listed, default_vocab_size cutting the last two ranks off; no tokenizer.json."""
    ranks = [bytes([b]) for b in range(256)] + [word.encode() for word in TEKKEN_WORDS]
    special = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]"]
    data = {"config": {"pattern": TEKKEN_PATTERN, "num_vocab_tokens": len(ranks), "version": "v7",
                       "default_vocab_size": len(ranks) + 10 - 2, "default_num_special_tokens": 10},
            "vocab": [{"rank": i, "token_bytes": base64.b64encode(piece).decode(), "token_str": None}
                      for i, piece in enumerate(ranks)]}
    if not old_format:
        data["special_tokens"] = [{"rank": i, "token_str": token, "is_control": True}
                                  for i, token in enumerate(special)]
    (folder / "tekken.json").write_text(json.dumps(data))
    if model_type:
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    if config:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("config", [{}, {"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>",
                                         "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<SPECIAL_7>"}])
def test_tekken_json_folder_as_transformers(tmp_path, config):
    """transformers 5.25 without mistral-common converts tekken.json to a byte-level BPE (its MistralConverter):
    same ids, offsets, decode; its special tokens (and <SPECIAL_i> fillers) first, none named without a
    tokenizer_config.json. minilora said it found no tokenizer file."""
    folder = _tekken_folder(tmp_path, model_type=None if config else "mistral", **config)
    theirs, ours = _both(folder)
    texts = ["hello the cat", " the  café\n\tworld [INST] hi [/INST]", "<s>x</s>", "日本 🙂 12345", "", "  x  "]
    for pair in (None, texts[::-1]):
        options = {"return_offsets_mapping": True, "padding": bool(config)}
        assert dict(ours(texts, pair, **options)) == dict(theirs(texts, pair, **options))
    ids = theirs(texts)["input_ids"]
    assert ours.batch_decode(ids, skip_special_tokens=True) == theirs.batch_decode(ids, skip_special_tokens=True)
    assert ours.batch_decode(ids) == theirs.batch_decode(ids)
    names = ("bos_token", "eos_token", "unk_token", "pad_token", "padding_side", "all_special_tokens")
    assert [getattr(ours, name) for name in names] == [getattr(theirs, name) for name in names]
    assert (len(ours), ours.convert_ids_to_tokens(list(range(12)))) == \
        (len(theirs), theirs.convert_ids_to_tokens(list(range(12))))
    assert type(ml.model_tokenizer(folder)).__name__ == "HFTokenizer"


def test_old_tekken_json_needs_mistral_common_as_in_transformers(tmp_path):
    """A tekken.json without its special_tokens list takes them from mistral-common: transformers raises an
    ImportError asking for it; minilora says so too (it found no tokenizer file before)."""
    _tekken_folder(tmp_path, old_format=True)
    with pytest.raises(ImportError):
        _both(tmp_path)
    with pytest.raises(ImportError, match="old format.*mistral-common"):
        ml_tokenizer(tmp_path)


# --- classes without a rule --------------------------------------------------------------------------------
@pytest.mark.parametrize("tokenizer_class, model_type, why", [
    ("MarianTokenizer", None, "SentencePiece tokenizer"),
    (None, "marian", "SentencePiece tokenizer"),
    ("M2M100Tokenizer", None, "SentencePiece tokenizer"),
    ("SeamlessM4TTokenizer", None, "rebuilds"),
    (None, "luke", "rebuilds"),
    ("ByT5Tokenizer", None, "Python tokenizer"),
    ("LayoutLMv3TokenizerFast", None, "rebuilds"),
])
def test_a_class_without_a_rule_is_refused_by_name(tmp_path, tokenizer_class, model_type, why):
    """Marian (its source.spm / target.spm need sentencepiece, which transformers asks for too) and the classes
    minilora has no rule for: a NotImplementedError naming the class and the way out, where minilora ran the
    tokenizer.json as written (other ids than transformers', or ids where transformers cannot load it at all)."""
    _bert_like_folder(tmp_path, tokenizer_class, model_type)
    name = tokenizer_class.removesuffix("Fast") if tokenizer_class else None
    with pytest.raises(NotImplementedError, match=rf"transformers' {name or '[A-Za-z0-9]+'}, .*{why}.*"
                                                  r"PreTrainedTokenizerFast"):
        ml_tokenizer(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "config.json").unlink(missing_ok=True)  # (the way out: the file as written, as transformers runs it)
    theirs, ours = _both(tmp_path)
    assert dict(ours(["the cat", "x y"], ["a", "b"])) == dict(theirs(["the cat", "x y"], ["a", "b"]))


def test_a_marian_folder_without_tokenizer_json_names_its_class(tmp_path):
    """A Marian folder as the Hub has it (source.spm, target.spm, vocab.json; no tokenizer.json): refused by its
    class's name (transformers asks for sentencepiece), where minilora said only that tokenizer.json is missing; a
    folder with only a slow tokenizer's files says which."""
    for name in ("source.spm", "target.spm", "vocab.json"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MarianTokenizer"}))
    with pytest.raises(ImportError, match="sentencepiece"):
        transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    with pytest.raises(NotImplementedError, match="MarianTokenizer, a SentencePiece tokenizer.*no tokenizer.json"):
        ml_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has source.spm, target.spm, vocab.json, the files of a slow"):
        ml_tokenizer(tmp_path)


@pytest.mark.parametrize("model_type, tokenizer_class", [("umt5", "T5Tokenizer"), ("nllb", None)])
def test_a_generic_model_type_runs_the_file_as_written(tmp_path, model_type, tokenizer_class):
    """umt5 (like pegasus_x, gpt_bigcode, ...) is TokenizersBackend in transformers 5.25: a folder naming
    T5Tokenizer runs its file as written there (minilora rebuilt it as T5: other ids); nllb (like code_llama,
    herbert, ...) has no config class there, so a folder naming no class runs as written too (minilora rebuilt it
    as NLLB)."""
    tok = _unigram(["<pad>", "</s>", "<unk>"], normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]))
    _write(tmp_path, tok, {"tokenizer_class": tokenizer_class, "eos_token": "</s>", "unk_token": "<unk>",
                           "pad_token": "<pad>", "extra_ids": 0}, model_type)
    theirs, ours = _both(tmp_path)
    texts = ["The Cat", "HELLO  there", "café"]
    assert dict(ours(texts)) == dict(theirs(texts))


def test_config_json_tokenizer_class_as_transformers(tmp_path):
    """A tokenizer_config.json that names no class leaves it to config.json's tokenizer_class (transformers'
    fallback): a Llama file under a config.json naming CodeLlamaTokenizer gets CodeLlama's BOS and infilling tokens
    (minilora ran it as written: no BOS)."""
    from test_tokenizer_classes_r11 import _sentencepiece_folder
    _sentencepiece_folder(tmp_path, None)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "tokenizer_class": "CodeLlamaTokenizer"}))
    theirs, ours = _both(tmp_path)
    texts = ["def f(x):", " the  cat", "<s>hello</s>"]
    assert (dict(ours(texts)), ours.all_special_tokens) == (dict(theirs(texts)), theirs.all_special_tokens)


def test_every_transformers_tokenizer_class_has_a_rule_or_is_refused():
    """Each tokenizer class transformers 5.25 ships (models/*/tokenization_*.py) is one minilora rebuilds, an alias
    of one, or refused: a new class fails here rather than tokenizing differently without a word."""
    root = pathlib.Path(transformers.__file__).parent / "models"
    names = set()
    for path in root.glob("*/tokenization_*.py"):
        names |= set(re.findall(r"^class (\w+Tokenizer)\(", path.read_text(encoding="utf-8"), re.M))
    known = (set(ml._CLASS_RULES) | set(ml._CLASS_ALIASES) | ml._SENTENCEPIECE_CLASSES | ml._PYTHON_CLASSES |
             ml._REBUILDING_CLASSES | {"RagTokenizer"})  # (RAG's holds two tokenizers, each loaded by its class)
    assert sorted(names - known) == []


@pytest.mark.parametrize("name", ["FNetTokenizer (ALBERT's, the file as written)", "XLNetTokenizer", "MBart50Tokenizer",
                                  "CLIPTokenizer"])
def test_saved_folder_loads_back_as_transformers_own(tmp_path, name):
    """save_pretrained names the class (and its arguments) so that the folder loads back, in transformers and in
    minilora, as transformers' own saved folder does (an FNet folder saved as PreTrainedTokenizerFast lost its
    token_type_ids)."""
    (tmp_path / "first").mkdir()
    theirs, ours = _both(FOLDERS[name](tmp_path / "first"))
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    texts = ["the cat", "Hello  World, café", " x <mask> y", ""]
    want = _both(tmp_path / "theirs")[0]
    for tok in _both(tmp_path / "ours"):
        assert dict(tok(texts, texts[::-1])) == dict(want(texts, texts[::-1]))
        assert (tok.model_input_names, tok.all_special_tokens, tok.padding_side, len(tok)) == \
            (want.model_input_names, want.all_special_tokens, want.padding_side, len(want))


def _mistral_small_folder(folder, metaspace):
    """A Mistral folder of more than 100000 tokens (Mistral Small 3.1's size) saved before transformers 5, its
    tokenizer.json with the wrong split pattern (or a Metaspace pre-tokenizer)."""
    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("c", "a"), ("ca", "t"), ("Ġ", "ca"), ("Ġca", "t"), ("'", "s")]
    vocab.update({left + right: len(vocab) + i for i, (left, right) in enumerate(merges)})
    vocab.update({f"~{i}": len(vocab) + i for i in range(100001 - len(vocab))})
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Metaspace() if metaspace else pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(r"(?i:'s|'t)|\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "</s>", "<unk>"])
    _write(folder, tok, {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>"})
    (folder / "config.json").write_text(json.dumps({"model_type": "mistral", "transformers_version": "4.50.0"}))
    return folder


@pytest.mark.parametrize("metaspace", [False, True])
def test_fix_mistral_regex_as_transformers(tmp_path, metaspace):
    """from_pretrained(folder, fix_mistral_regex=True), as transformers' warning on a Mistral Small 3.1 folder
    asks: Mistral's split pattern in place of the file's (minilora refused the argument); without it the same
    warning, and the file's pattern."""
    folder = _mistral_small_folder(tmp_path, metaspace)
    texts = ["The cat's  Hat 12 éa", "x\n\ny", "l'été 2024"]
    theirs, ours = _both(folder, fix_mistral_regex=True)
    assert dict(ours(texts)) == dict(theirs(texts))
    with pytest.warns(UserWarning, match="fix_mistral_regex=True"):
        ours = ml_tokenizer(folder)
    assert dict(ours(texts)) == dict(_both(folder)[0](texts))
