"""Tokenizers: text <-> token ids, called the way transformers' tokenizers are.

Two with one interface:

* ``ByteTokenizer()`` -- built in, needs no files: the UTF-8 bytes of the text are the ids 0..255,
  followed by three special tokens (bos 256, eos 257, pad 258). Every string round-trips, nothing is
  ever unknown, and a learner can decode ids by hand (``ord('a') == 97``). The shipped base model
  was trained with it.
* ``from_pretrained(folder)`` (or ``from_file("tokenizer.json")``) -- a real Hugging Face tokenizer
  (BPE, SentencePiece-style, ...) run by the ``tokenizers`` package, for checkpoints trained with one.

What transformers users write works, with transformers' defaults::

    tok(texts)                                   # {"input_ids": lists, "attention_mask": lists}
    tok(texts, return_tensors="np", padding=True, truncation=True, max_length=64)
    inputs = tok(text, return_tensors="pt").to(model.device)    # minilora Tensors, int64 [1, n]
    out = model.generate(**inputs, max_new_tokens=20)
    tok.decode(out[0], skip_special_tokens=True)  # special tokens are kept unless asked
    tok.batch_decode(out, skip_special_tokens=True)
    tok.pad_token = tok.eos_token                # the usual fix for a tokenizer without a pad token
    tok.save_pretrained("folder")                # tokenizer.json + tokenizer_config.json
    tok.add_tokens(["<think>"]); tok.add_special_tokens({"additional_special_tokens": ["<tool>"]})
    model.resize_token_embeddings(len(tok))      # new tokens: rows for them (either tokenizer)
    tok.apply_chat_template(messages, add_generation_prompt=True)   # if the tokenizer has a template
    enc = tok(questions, contexts, truncation="only_second", max_length=384, stride=128,
              return_overflowing_tokens=True, return_offsets_mapping=True)   # the QA tutorial's call
    enc.sequence_ids(0), enc.word_ids(0), enc.char_to_token(0, 5)          # token <-> text alignment

A folder whose class transformers 5 rebuilds (Llama, CodeLlama, Gemma, Cohere, Qwen2, GPT-2, GPT-NeoX, T5,
XLM-RoBERTa, CamemBERT, ALBERT, DeBERTa v2, BERT, RoBERTa, mBART, NLLB, Whisper, XLNet, Pegasus, MPNet, Funnel,
FNet, BigBird, CLIP, DeBERTa, mBART-50, GPT-1, XGLM, RemBERT, Blenderbot, HerBERT, Reformer, BARThez, Splinter,
SigLIP 2, DPR, Parakeet, LASR, VideoPrism, Nougat: the table ``_CLASS_RULES``) tokenizes as there: the class's
pipeline around the file's vocabulary, so a Llama folder's "<s>user" is "<s>", "user"; CodeLlama's ``<FILL_ME>`` is
an infilling prompt (``CodeLlamaTokenizer``); mBART's and NLLB's ``src_lang`` / ``tgt_lang`` mark texts and targets
(``TranslationTokenizer``), Whisper's ``language`` / ``task`` prefix them (``WhisperTokenizer``). A class of
transformers' without a rule here (Marian, LUKE, ...) is refused by name, never run differently without a word; a
Mistral folder with only ``tekken.json`` is converted as transformers converts it.

A call runs as in transformers' fast tokenizers: the ``tokenizers`` backend gets the call's truncation
and padding (put back afterwards) and encodes the batch; its Encodings stay in the BatchEncoding.
The byte tokenizer's plain calls need no ``tokenizers`` package; asked for alignment they use it too.

As in transformers, ``encode`` adds the beginning-of-sequence token by default
(``add_special_tokens=True``); pass ``False`` for the bare ids of a piece of text.
"""
import contextlib
import functools
import json
import os
import re
import warnings
from typing import NamedTuple

import numpy as np

__all__ = ["ByteTokenizer", "HFTokenizer", "CodeLlamaTokenizer", "MBartTokenizer", "MBart50Tokenizer", "NllbTokenizer",
           "WhisperTokenizer", "CLIPTokenizer", "SplinterTokenizer", "CTCTokenizer", "BatchEncoding", "CharSpan",
           "TokenSpan", "from_file", "from_pretrained", "model_tokenizer"]

TOKENIZER_FILE = "tokenizer.json"
TEKKEN_FILE = "tekken.json"  # Mistral's own format (Mistral NeMo, Small 3, ...), read where tokenizer.json is missing
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# transformers 5 saves a chat template as its own file, named ones beside it in a folder (and reads them first)
CHAT_TEMPLATE_FILE, CHAT_TEMPLATE_DIR = "chat_template.jinja", "additional_chat_templates"
VERY_LARGE_INTEGER = int(1e30)  # transformers' model_max_length when a tokenizer sets none
LARGE_INTEGER = int(1e20)  # above it, a model_max_length means "none set" (transformers' rule)


class CharSpan(NamedTuple):
    """Characters ``start`` .. ``end`` (exclusive) of the text (transformers' name)."""
    start: int
    end: int


class TokenSpan(NamedTuple):
    """Tokens ``start`` .. ``end`` (exclusive) of a row (transformers' name)."""
    start: int
    end: int


class BatchEncoding(dict):
    """What a tokenizer call returns (transformers' name): a dict whose keys are also attributes
    (``inputs.input_ids``), moved to a device by ``inputs.to(device)`` (its Tensors; lists and
    NumPy arrays stay), unpacked into a model by ``model(**inputs)``.

    A tokenizer.json tokenizer keeps, as transformers' fast tokenizers, each row's ``tokenizers.Encoding``
    (``inputs[i]``, ``inputs.encodings``): the token <-> text alignment behind ``word_ids()``,
    ``sequence_ids()``, ``tokens()``, ``token_to_chars()``, ``char_to_token()``, ... The byte tokenizer's plain
    call keeps none (``is_fast`` False, the alignment methods refused, as for transformers' Python tokenizers);
    asked for offsets, words or pairs it keeps them too."""

    def __init__(self, data=None, encoding=None, tensor_type=None, prepend_batch_axis=False, n_sequences=None):
        super().__init__(data or {})
        if encoding is not None and not isinstance(encoding, (list, tuple)):
            encoding = [encoding]
        self._encodings = None if encoding is None else list(encoding)
        if n_sequences is None and self._encodings:
            n_sequences = self._encodings[0].n_sequences
        self._n_sequences = n_sequences
        if tensor_type is not None or prepend_batch_axis:
            self.convert_to_tensors(tensor_type, prepend_batch_axis)

    def __getattr__(self, name):
        if name.startswith("_"):  # the private slots, before __init__ set them (copy, pickle)
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no {name!r}; keys: {list(self)}") from None

    def __getitem__(self, key):
        if isinstance(key, str):
            return super().__getitem__(key)
        if self.encodings is not None and isinstance(key, (int, slice)):
            return self.encodings[key]  # transformers: a row's tokenizers.Encoding
        if isinstance(key, slice):  # transformers: those rows of every value
            return {name: value[key] for name, value in self.items()}
        raise KeyError(f"BatchEncoding[{key!r}]: index it by name (inputs['input_ids']); indexing by batch "
                       "position (a row's tokenizers.Encoding) needs a call that kept the Encodings -- take a row "
                       "as inputs['input_ids'][i]")

    @property
    def data(self):
        """The plain dict (transformers keeps its values in ``.data``)."""
        return dict(self)

    @property
    def encodings(self):
        """Each row's ``tokenizers.Encoding`` (overflow rows included), or None when the call kept none."""
        return self.__dict__.get("_encodings")

    @property
    def is_fast(self):
        return self.encodings is not None

    @property
    def n_sequences(self):
        """1 for single texts, 2 for text pairs, None when unknown (transformers' attribute)."""
        return self.__dict__.get("_n_sequences")

    def to(self, device, *, non_blocking=False):
        """Move every Tensor value to ``device`` (a name, a device object or an index), in place, and
        return ``self``, as transformers does; anything else (a dtype) is not a device: a warning,
        and nothing changes (transformers' rule: ids must stay integers)."""
        from .tensor import Tensor
        if not (isinstance(device, (str, int)) or type(device).__name__ in ("Device", "device")):
            warnings.warn(f"Attempting to cast a BatchEncoding to type {device}. This is not supported.")
            return self
        for key, value in self.items():
            if isinstance(value, Tensor):
                self[key] = value.to(device=device, non_blocking=non_blocking)
        return self

    def convert_to_tensors(self, tensor_type=None, prepend_batch_axis=False):
        """Convert the values in place to ``tensor_type`` ("pt": minilora Tensors, "np": arrays, None:
        unchanged); ``prepend_batch_axis`` makes one row a batch of one first. Returns ``self``."""
        for key, value in self.items():
            rows = _rows(value)
            self[key] = _as_tensor([rows] if prepend_batch_axis else rows, tensor_type, key)
        return self

    # --- token <-> text alignment, from the kept Encodings (transformers' methods) -----------------
    def _encoding(self, method, batch_index):
        if not self.encodings:
            raise ValueError(f"{method}() is not available: this BatchEncoding keeps no tokenizers.Encoding (the "
                             "byte tokenizer's plain call; transformers' Python tokenizers refuse it too). Ask the "
                             "call for the alignment (return_offsets_mapping=True) or use a tokenizer.json "
                             "tokenizer; tokenizer.convert_ids_to_tokens(ids) gives a row's token strings")
        return self.encodings[batch_index]

    def tokens(self, batch_index=0):
        return self._encoding("tokens", batch_index).tokens

    def sequence_ids(self, batch_index=0):
        return self._encoding("sequence_ids", batch_index).sequence_ids

    def word_ids(self, batch_index=0):
        return self._encoding("word_ids", batch_index).word_ids

    def words(self, batch_index=0):
        return self.word_ids(batch_index)

    def _row_and_index(self, method, first, second):
        """transformers' two calling forms: ``f(index)`` (row 0) or ``f(batch_index, index)``."""
        batch_index, index = (0, first) if second is None else (first, second)
        return self._encoding(method, batch_index), index

    def token_to_sequence(self, batch_or_token_index, token_index=None):
        encoding, index = self._row_and_index("token_to_sequence", batch_or_token_index, token_index)
        return encoding.token_to_sequence(index if index >= 0 else len(encoding.ids) + index)

    def token_to_word(self, batch_or_token_index, token_index=None):
        encoding, index = self._row_and_index("token_to_word", batch_or_token_index, token_index)
        return encoding.token_to_word(index if index >= 0 else len(encoding.ids) + index)

    def token_to_chars(self, batch_or_token_index, token_index=None):
        encoding, index = self._row_and_index("token_to_chars", batch_or_token_index, token_index)
        span = encoding.token_to_chars(index)
        return CharSpan(*span) if span is not None else None

    def word_to_tokens(self, batch_or_word_index, word_index=None, sequence_index=0):
        encoding, index = self._row_and_index("word_to_tokens", batch_or_word_index, word_index)
        span = encoding.word_to_tokens(index, sequence_index)
        return TokenSpan(*span) if span is not None else None

    def word_to_chars(self, batch_or_word_index, word_index=None, sequence_index=0):
        encoding, index = self._row_and_index("word_to_chars", batch_or_word_index, word_index)
        return CharSpan(*encoding.word_to_chars(index, sequence_index))

    def char_to_token(self, batch_or_char_index, char_index=None, sequence_index=0):
        encoding, index = self._row_and_index("char_to_token", batch_or_char_index, char_index)
        return encoding.char_to_token(index, sequence_index)

    def char_to_word(self, batch_or_char_index, char_index=None, sequence_index=0):
        encoding, index = self._row_and_index("char_to_word", batch_or_char_index, char_index)
        return encoding.char_to_word(index, sequence_index)


SPECIAL_KINDS = ("bos", "eos", "pad", "unk", "sep", "cls", "mask")  # transformers' named special tokens


def _special_token(kind):
    """A property ``<kind>_token``: the token's text, kept in step with ``<kind>_token_id``."""
    def get(self):
        token_id = getattr(self, f"{kind}_token_id")
        return None if token_id is None else self._token(token_id)

    def set_(self, token):
        token_id = None if token is None else self._token_id(token)
        if token is not None and token_id is None:
            raise ValueError(f"{kind}_token {token!r} is not in the tokenizer's vocabulary")
        setattr(self, f"{kind}_token_id", token_id)
    return property(get, set_, doc=f"The {kind} token as text (setting it sets ``{kind}_token_id``).")


def _post_processor_flag(name):
    """A flag (``add_bos_token``, ``add_eos_token``) whose setting rebuilds the post-processor."""
    def get(self):
        return getattr(self, f"_{name}")

    def set_(self, value):
        setattr(self, f"_{name}", value)
        self._update_post_processor()
    return property(get, set_)


class _Tokenizer:
    """What both tokenizers share: special tokens by name, the batch call, padding, truncation,
    decoding, saving and chat templates, on top of each one's ``encode`` / ``decode`` /
    ``_token`` (id -> text) / ``_token_id`` (text -> id or None)."""

    bos_token_id = eos_token_id = pad_token_id = unk_token_id = sep_token_id = cls_token_id = mask_token_id = None
    extra_special_tokens = ()  # add_special_tokens({"additional_special_tokens": [...]}) (transformers 5's name)
    padding_side = "right"
    pad_token_type_id = 0  # the token type id padding gets (transformers' name)
    model_input_names = ["input_ids", "attention_mask"]  # what a call returns, as transformers names it
    truncation_side = "right"
    model_max_length = VERY_LARGE_INTEGER
    chat_template = None
    clean_up_tokenization_spaces = False  # decode's default (transformers 5's; tokenizer_config.json may set it)
    # a call's split_special_tokens default (transformers' attribute: ``tok.split_special_tokens = True`` makes "<s>"
    # in a text plain characters; from_pretrained(..., split_special_tokens=True) / tokenizer_config.json set it)
    split_special_tokens = False
    # the class save_pretrained names: the pipeline as saved runs as written (a rebuilt class's folder keeps its ids)
    _saved_class = "PreTrainedTokenizerFast"

    def __len__(self):
        return self.vocab_size

    add_bos_token = _post_processor_flag("add_bos_token")
    add_eos_token = _post_processor_flag("add_eos_token")

    def _update_post_processor(self):
        raise NotImplementedError  # abstract: each tokenizer applies the flags its own way

    # transformers' hooks around a call's texts and its text_target: the translation classes' language codes
    def _switch_to_input_mode(self):
        """Before a call's texts (and after its targets): nothing, unless the class marks them."""

    def _switch_to_target_mode(self):
        """Before a call's ``text_target``: nothing, unless the class marks them."""

    _saved_settings = None  # the __init__ arguments save_pretrained writes (_class_config)

    def _language_config(self):
        return {}

    def _class_config(self):
        """What save_pretrained writes besides the class's name for the class to load back as it is: its __init__
        arguments, for a class whose __init__ sets its own post-processor (a BERT folder saved as "BertTokenizer"
        keeps its do_lower_case and token_type_ids); the others are saved as PreTrainedTokenizerFast, run as
        written."""
        return {} if self._saved_settings is None else {**self._saved_settings, **self._language_config()}

    def _bos_eos_post_processor(self):
        """transformers' update_post_processor: ``<s> $A </s>`` (pairs ``<s> $A </s> <s> $B </s>``), each special
        token there only when its flag is set (a flag whose token is None is switched off)."""
        from tokenizers import processors
        self._add_bos_token = bool(self._add_bos_token and self.bos_token is not None)
        self._add_eos_token = bool(self._add_eos_token and self.eos_token is not None)
        bos = f"{self.bos_token}:0 " if self._add_bos_token else ""
        eos = f" {self.eos_token}:0" if self._add_eos_token else ""
        single = f"{bos}$A:0{eos}"
        pair = (f"{single}{f' {self.bos_token}:1' if self._add_bos_token else ''} $B:1"
                f"{f' {self.eos_token}:1' if self._add_eos_token else ''}")
        special = [(token, self._token_id(token)) for token, on in ((self.bos_token, self._add_bos_token),
                                                                    (self.eos_token, self._add_eos_token)) if on]
        return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)

    # special tokens by name, as in transformers (tok.pad_token = tok.eos_token)
    bos_token, eos_token, pad_token, unk_token, sep_token, cls_token, mask_token = (
        _special_token(kind) for kind in SPECIAL_KINDS)

    @property
    def all_special_tokens(self):
        """The named special tokens, then the extra ones (transformers' order: bos, eos, unk, sep, pad, cls, mask)."""
        named = [getattr(self, f"{kind}_token") for kind in TRANSFORMERS_SPECIAL_ORDER]
        return list(dict.fromkeys([t for t in named if t is not None] + list(self.extra_special_tokens)))

    @property
    def all_special_ids(self):
        """The ids of ``all_special_tokens``, in its order (transformers')."""
        ids = (self._token_id(token) for token in self.all_special_tokens)
        return [i for i in ids if i is not None]

    # --- what transformers' tokenizers also answer about themselves ------------------------------------------
    is_fast = True  # (the tokenizers library's Encodings: offsets, word ids, sequence ids, as the fast tokenizers')
    name_or_path = ""  # the folder from_pretrained read (transformers' attribute; "" for one built in memory)

    @property
    def special_tokens_map(self):
        """``{"bos_token": "<s>", ...}``: the named special tokens that are set, in transformers' order (the extra
        ones are ``extra_special_tokens``)."""
        tokens = {f"{kind}_token": getattr(self, f"{kind}_token") for kind in TRANSFORMERS_SPECIAL_ORDER}
        return {name: token for name, token in tokens.items() if token is not None}

    @property
    def extra_special_tokens_ids(self):
        """The ids of ``extra_special_tokens`` (transformers 5's name; the old ``additional_special_tokens_ids``)."""
        return [self._token_id(token) for token in self.extra_special_tokens]

    @property
    def vocab(self):
        """``get_vocab()`` (transformers' property: every token, added ones included, to its id)."""
        return self.get_vocab()

    @property
    def max_len_single_sentence(self):
        """The most text tokens one sequence may hold beside its special tokens (``model_max_length`` less them)."""
        return self.model_max_length - self.num_special_tokens_to_add(pair=False)

    @property
    def max_len_sentences_pair(self):
        """The same for a pair of texts."""
        return self.model_max_length - self.num_special_tokens_to_add(pair=True)

    def num_special_tokens_to_add(self, pair=False):
        """How many special tokens a call adds to one text (``pair``: to a pair), as the post-processor writes them
        (transformers' method: the room a chunker leaves, ``max_length - tok.num_special_tokens_to_add()``)."""
        return self._backend_for_calls().num_special_tokens_to_add(pair)

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        """1 for each id of ``all_special_ids``, 0 for the others, over a sequence that already has its special
        tokens (``already_has_special_tokens=True``: what transformers' data collators ask, and all it answers
        for a fast tokenizer)."""
        if not already_has_special_tokens:
            raise NotImplementedError(f"{type(self).__name__} does not implement get_special_tokens_mask for "
                                      "non-formatted sequences")
        if token_ids_1 is not None:
            raise ValueError("You should not supply a second sequence if the provided sequence of ids is already "
                             "formatted with special tokens for the model.")
        special = set(self.all_special_ids)
        return [1 if int(i) in special else 0 for i in _id_list(token_ids_0)]

    # --- new tokens (the "add new tokens, resize_token_embeddings, trainable_token_indices" recipe) ------
    def add_tokens(self, new_tokens, special_tokens=False):
        """Add tokens (strings or ``tokenizers.AddedToken``) after the vocabulary, as transformers' fast
        tokenizers: each is matched in the text before the model's own tokenization splits it. A string
        is normalized like the text unless ``special_tokens``. Returns how many were new; then
        ``model.resize_token_embeddings(len(tokenizer))``."""
        if not new_tokens:
            return 0
        if not isinstance(new_tokens, (list, tuple)):
            new_tokens = [new_tokens]
        return self._add_tokens(list(new_tokens), special_tokens)

    def add_special_tokens(self, special_tokens_dict, replace_extra_special_tokens=True):
        """``{"pad_token": "<pad>", "additional_special_tokens": [...]}``: add the tokens as special ones
        (kept whole, never normalized, dropped by ``decode(..., skip_special_tokens=True)``) and name them,
        as transformers 5 (``extra_special_tokens`` is its name for the additional ones). Returns how many
        were new to the vocabulary."""
        if not special_tokens_dict:
            return 0
        wanted = dict(special_tokens_dict)
        if "additional_special_tokens" in wanted and not wanted.get("extra_special_tokens"):
            wanted["extra_special_tokens"] = wanted.pop("additional_special_tokens")
        allowed = {f"{kind}_token" for kind in SPECIAL_KINDS} | {"extra_special_tokens"}
        to_add, named = [], {}
        for key, value in wanted.items():
            if key not in allowed:
                raise ValueError(f"Key {key} is not a valid special token. Valid keys are: {sorted(allowed)}")
            extra = key == "extra_special_tokens"
            if extra and (not isinstance(value, (list, tuple)) or not all(map(_is_token, value))):
                raise ValueError(f"Tokens {value} for key {key} should all be str or AddedToken instances")
            if not extra and not _is_token(value):
                raise ValueError(f"Token {value} for key {key} should be a str or an AddedToken instance")
            tokens = list(value) if extra else [value]  # (strings: add_tokens(special_tokens=True) keeps them whole)
            if extra:
                old = [] if replace_extra_special_tokens else list(self.extra_special_tokens)
                named[key] = old + [str(t) for t in tokens if str(t) not in old]
            else:
                named[key] = str(tokens[0])
            to_add += tokens
        added = self.add_tokens(to_add, special_tokens=True)
        for key, value in named.items():  # after adding: a name is set to a token of the vocabulary
            setattr(self, key, value)
        return added

    def _add_tokens(self, tokens, special_tokens):
        raise NotImplementedError  # abstract: each tokenizer adds tokens its own way

    def get_added_vocab(self):
        """The added tokens (special ones included) as {token: id}, in id order (transformers' method)."""
        return self.added_tokens_encoder

    @property
    def added_tokens_decoder(self):
        """``{id: tokenizers.AddedToken}`` of the added tokens (special ones included) with their flags, in id
        order (transformers' property; needs the tokenizers package)."""
        return dict(sorted(self._backend().get_added_tokens_decoder().items()))

    @property
    def added_tokens_encoder(self):
        """``{token: id}`` of the added tokens, in id order (transformers' property)."""
        return {token.content: i for i, token in self.added_tokens_decoder.items()}

    # --- looking inside: tokens as strings, as transformers names them ----------------------------
    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        """The token string of an id (or a list of them), as in the saved tokenizer.json's vocabulary."""
        ids = _rows(ids)  # a 0-d Tensor or array is one id
        if isinstance(ids, (int, np.integer)):
            return self._token(int(ids))
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._token(i) for i in _id_list(ids) if i not in special]

    def convert_tokens_to_ids(self, tokens):
        """The id of a token string (or a list of them); for a string that is no token the unk token's id (None
        without one), as transformers' fast tokenizers."""
        if isinstance(tokens, str):
            return self._id_or_unk(tokens)
        return [self._id_or_unk(token) for token in tokens]

    def _id_or_unk(self, token):
        token_id = self._token_id(token)
        return self.unk_token_id if token_id is None else token_id

    def encode(self, text, text_pair=None, add_special_tokens=True, padding=False, truncation=None, max_length=None,
               stride=0, padding_side=None, return_tensors=None, **kwargs):
        """The ids of one text, or of a ``text_pair`` (transformers' ``encode``; a list of texts: a list of rows, as
        transformers 5 encodes a batch): a list, or with
        ``return_tensors`` ("pt": a minilora Tensor, "np": an array) a batch of one, [1, n] --
        ``model.generate(tok.encode(text, return_tensors="pt"))``. The other options work as in the call.
        (``encode(text, False)``: a bool second argument is read as ``add_special_tokens``, what it means.)"""
        if isinstance(text_pair, bool):
            text_pair, add_special_tokens = None, text_pair
        batch = _is_text_batch(text) and not kwargs.get("is_split_into_words")
        if not (batch or _is_split(text, kwargs)):
            _check_text(text)
        plain = (text_pair, padding, truncation, max_length, stride, return_tensors, kwargs, batch) == \
            (None, False, None, None, 0, None, {}, False)
        if plain and self._encodes_alone({}):
            return self._encode(text, add_special_tokens)
        return self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                    max_length=max_length, stride=stride, padding_side=padding_side, return_tensors=return_tensors,
                    **kwargs)["input_ids"]

    def tokenize(self, text, pair=None, add_special_tokens=False):
        """The token strings of ``text`` (and ``pair``), without special tokens unless asked, as transformers'
        fast tokenizers give them: the Encoding's tokens (an added token with ``lstrip`` / ``rstrip`` is the text
        it took, its spaces included; ``convert_ids_to_tokens`` names it by its content)."""
        return self(text, pair, add_special_tokens=add_special_tokens, return_offsets_mapping=True).tokens()

    def get_vocab(self):
        """``{token string: id}`` for every token, added ones included."""
        return {self._token(i): i for i in range(len(self))}

    # --- the batch call --------------------------------------------------------------------------
    def __call__(self, text=None, text_pair=None, text_target=None, text_pair_target=None,
                 add_special_tokens=True, padding=False, truncation=None, max_length=None, stride=0,
                 is_split_into_words=False, pad_to_multiple_of=None, padding_side=None, return_tensors=None,
                 return_token_type_ids=None, return_attention_mask=None, return_overflowing_tokens=False,
                 return_special_tokens_mask=False, return_offsets_mapping=False, return_length=False,
                 verbose=True, tokenizer_kwargs=None, **kwargs):
        """transformers' call: ``{"input_ids", "attention_mask"}`` for one text or a list of texts.

        * ``padding``: False (default: rows keep their lengths), True / "longest", or "max_length";
          on ``padding_side`` (default ``self.padding_side``), with ``pad_token_id`` (mask 0), to a
          multiple of ``pad_to_multiple_of`` if given.
        * ``truncation``: True / "longest_first" (of a pair, the longer text loses a token at a time),
          "only_first" / "only_second", cut to ``max_length`` (default ``model_max_length``) on
          ``truncation_side``. As in transformers, ``max_length`` without ``padding`` or ``truncation``
          truncates (with a warning). ``return_overflowing_tokens=True`` keeps what was cut as more rows,
          each overlapping the one before by ``stride`` tokens (``overflow_to_sample_mapping``: each row's text).
        * ``text_pair``: the second text of each pair (question + context); ``is_split_into_words``:
          each text is a list of words (NER labels per word, ``word_ids()``).
        * ``return_offsets_mapping`` (each token's ``(start, end)`` characters), ``return_special_tokens_mask``,
          ``return_length``, ``return_token_type_ids``: more keys, as transformers' fast tokenizers give them.
        * ``text_target``: tokenized the same way into ``labels``.
        * ``return_tensors``: None (Python lists), "pt" (int64 minilora Tensors [batch, length], also for
          one text: what ``model(**inputs)`` / ``model.generate(**inputs)`` take) or "np" (int64 arrays).
        """
        options = dict(add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                       max_length=max_length, stride=stride, is_split_into_words=is_split_into_words,
                       pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side, return_tensors=return_tensors,
                       return_token_type_ids=return_token_type_ids, return_attention_mask=return_attention_mask,
                       return_overflowing_tokens=return_overflowing_tokens,
                       return_special_tokens_mask=return_special_tokens_mask,
                       return_offsets_mapping=return_offsets_mapping, return_length=return_length,
                       split_special_tokens=kwargs.pop("split_special_tokens", self.split_special_tokens),
                       verbose=verbose)
        max_target_length = kwargs.pop("max_target_length", None)
        options.update(tokenizer_kwargs or {})  # then the other keywords: explicit ones win, as in transformers
        options.update(kwargs)
        _refuse_unknown_call_options(options)
        if text is None and text_target is None:
            raise ValueError("You need to specify either `text` or `text_target`.")
        verbose = options.pop("verbose")  # (False: none of transformers' warnings, as there)
        padding, truncation, max_length = self._padding_truncation(
            options.pop("padding"), options.pop("truncation"), options.pop("max_length"), pad_to_multiple_of, verbose)
        out = None
        if text is not None:
            self._switch_to_input_mode()
            out = self._encode_plus(text, text_pair, padding, truncation, max_length, verbose, **options)
        if text_target is not None:
            length = max_target_length if max_target_length is not None else max_length
            self._switch_to_target_mode()
            try:
                targets = self._encode_plus(text_target, text_pair_target, padding, truncation, length, verbose,
                                            **options)
            finally:
                self._switch_to_input_mode()
            if out is None:
                return targets
            out["labels"] = targets["input_ids"]
        return out

    def _padding_truncation(self, padding, truncation, max_length, pad_to_multiple_of, verbose=True):
        """transformers' padding / truncation arguments -> (padding strategy, truncation strategy, max_length):
        False | "longest" | "max_length", and False | "longest_first" | "only_first" | "only_second"."""
        if truncation is None and max_length is not None and padding is False:
            truncation = "longest_first"  # max_length alone truncates (transformers 5 says nothing about it)
        if verbose and padding is True and max_length is not None and truncation in (None, False, "do_not_truncate"):
            warnings.warn("`max_length` is ignored when `padding`=`True` and there is no truncation strategy. "
                          "To pad to max length, use `padding='max_length'`.")
        padding = _strategy(padding, PADDING_STRATEGIES, "PaddingStrategy", true="longest")
        truncation = _strategy(truncation, TRUNCATION_STRATEGIES, "TruncationStrategy", true="longest_first")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                       or max_length < 1):
            raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
        if max_length is None:  # model_max_length, unless the tokenizer sets none (transformers' huge default)
            known = self.model_max_length <= LARGE_INTEGER
            if padding == "max_length" and not known:
                warnings.warn("padding='max_length' without max_length, and the tokenizer sets no model_max_length: "
                              "not padding (as transformers); pass max_length")
                padding = False
            if truncation and not known:
                truncation = False
            if known and (padding == "max_length" or truncation):
                max_length = self.model_max_length
        if padding and self.pad_token_id is None:
            raise ValueError("Asking to pad but the tokenizer does not have a padding token. Please select a token to "
                             "use as `pad_token` `(tokenizer.pad_token = tokenizer.eos_token e.g.)`.")
        if truncation and padding and pad_to_multiple_of and max_length is not None \
                and max_length % pad_to_multiple_of:
            raise ValueError(f"Truncation and padding are both activated but truncation length ({max_length}) is not "
                             f"a multiple of pad_to_multiple_of ({pad_to_multiple_of}).")
        return padding, truncation, max_length

    # Options only the tokenizers backend answers (the byte tokenizer's own path keeps no alignment).
    _BACKEND_OPTIONS = ("stride", "is_split_into_words", "return_token_type_ids", "return_overflowing_tokens",
                        "return_special_tokens_mask", "return_offsets_mapping", "return_length", "split_special_tokens")

    def _encode_plus(self, text, text_pair, padding, truncation, max_length, verbose, **options):
        """One call's texts (or pairs) -> a BatchEncoding, by the tokenizers backend as transformers' fast
        tokenizers, or (the byte tokenizer's plain calls) by ``_encode``."""
        _check_text_input(text, "text")
        if text_pair is not None:
            _check_text_input(text_pair, "text_pair")
        texts = [text] if isinstance(text, str) else text
        if text_pair is None and truncation in (False, "longest_first", "only_first") and self._encodes_alone(options) \
                and all(isinstance(t, str) for t in texts):
            out = self._encode_rows(text, truncation and max_length, padding, max_length, **options)
        else:
            out = self._encode_with_backend(text, text_pair, padding, truncation, max_length, **options)
        if max_length is None and verbose:
            self._warn_if_too_long(out["input_ids"])
        return out

    def _warn_if_too_long(self, input_ids):
        """transformers' warning (once per tokenizer) for a row longer than the model takes: a silent cause of
        index errors or garbage later, in the model's position embeddings."""
        rows = _rows(input_ids)
        rows = [rows] if rows and not isinstance(rows[0], list) else rows
        longest = max((len(row) for row in rows), default=0)
        if longest > self.model_max_length and not self.__dict__.get("_warned_too_long"):
            self._warned_too_long = True
            warnings.warn(f"Token indices sequence length is longer than the specified maximum sequence length for "
                          f"this model ({longest} > {self.model_max_length}). Running this sequence through the "
                          "model will result in indexing errors")

    def _encodes_alone(self, options):
        """Whether this call can skip the tokenizers backend: only the byte tokenizer, without the options
        that need token alignment."""
        return False

    def _encode_rows(self, text, length, padding, max_length, add_special_tokens, pad_to_multiple_of, padding_side,
                     return_tensors, return_attention_mask, **unused):
        """The byte tokenizer's plain call: ``_encode`` cut to ``length``, padded by ``pad``."""
        single = isinstance(text, str)
        rows = [self._encode_truncated(t, add_special_tokens, length or None) for t in ([text] if single else text)]
        out = self.pad({"input_ids": rows}, padding=padding, max_length=max_length,
                       pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
                       return_attention_mask=return_attention_mask, return_tensors=return_tensors)
        if single and return_tensors is None:
            out = BatchEncoding({k: v[0] for k, v in out.items()})
        return out

    def _encode_with_backend(self, text, text_pair, padding, truncation, max_length, *, add_special_tokens, stride,
                             is_split_into_words, pad_to_multiple_of, padding_side, return_tensors,
                             return_token_type_ids, return_attention_mask, return_overflowing_tokens,
                             return_special_tokens_mask, return_offsets_mapping, return_length, split_special_tokens):
        """transformers' fast-tokenizer call: the backend's truncation and padding set for the call (and
        restored after it), ``encode_batch``, then one row per Encoding (and per overflow)."""
        batched = (isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
                   if is_split_into_words else isinstance(text, (list, tuple)))
        if batched and isinstance(text_pair, str):
            raise TypeError("when tokenizing batches of text, `text_pair` must be a list or tuple with the same "
                            "length as `text`.")
        if batched and text_pair is not None and len(text) != len(text_pair):
            raise ValueError(f"batch length of `text`: {len(text)} does not match batch length of `text_pair`: "
                             f"{len(text_pair)}.")
        if batched:
            inputs = list(zip(text, text_pair)) if text_pair is not None else list(text)
        else:
            inputs = [(text, text_pair)] if text_pair else [text]
        truncate = truncation and dict(max_length=max_length, stride=stride, strategy=truncation,
                                       direction=self.truncation_side)
        pad = padding and dict(length=max_length if padding == "max_length" else None,
                               direction=padding_side or self.padding_side, pad_id=self.pad_token_id,
                               pad_token=self.pad_token, pad_type_id=self.pad_token_type_id,
                               pad_to_multiple_of=pad_to_multiple_of)
        if pad and pad["direction"] not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {pad['direction']!r}")
        backend = self._backend_for_calls()
        with _backend_settings(backend, truncate, pad, split_special_tokens):
            try:
                encodings = backend.encode_batch(inputs, add_special_tokens=add_special_tokens,
                                                 is_pretokenized=is_split_into_words)
            except BaseException as exc:  # noqa: B036 -- the tokenizers library's bare Exceptions, and its Rust
                if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":  # panics (a stride
                    raise  # as long as the room left for the text), are ValueErrors here; Ctrl-C stays Ctrl-C
                raise ValueError(f"tokenizer call: {exc}") from None
        rows, samples = [], []
        for sample, encoding in enumerate(encodings):
            kept = [encoding, *encoding.overflowing] if return_overflowing_tokens else [encoding]
            rows += kept
            samples += [sample] * len(kept)
        fields = {"input_ids": lambda e: e.ids}
        wanted = {"token_type_ids": (return_token_type_ids, lambda e: e.type_ids),
                  "attention_mask": (return_attention_mask, lambda e: e.attention_mask)}
        for key, (asked, value) in wanted.items():
            if asked or (asked is None and key in self.model_input_names):
                fields[key] = value
        extra = {"special_tokens_mask": (return_special_tokens_mask, lambda e: e.special_tokens_mask),
                 "offset_mapping": (return_offsets_mapping, lambda e: e.offsets),
                 "length": (return_length, lambda e: len(e.ids))}
        fields.update({key: value for key, (asked, value) in extra.items() if asked})
        data = {key: [value(e) for e in rows] for key, value in fields.items()}
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = samples
        out = BatchEncoding(data, rows, tensor_type=return_tensors)
        if not batched and return_tensors is None and not return_overflowing_tokens:  # one text: one row
            out = BatchEncoding({k: v[0] if v and isinstance(v[0], list) else v for k, v in out.items()}, rows)
        return out

    def _backend_for_calls(self):
        """The ``tokenizers.Tokenizer`` that tokenizes calls (with alignment)."""
        return self._backend()

    def _encode_truncated(self, text, add_special_tokens, length):
        """``encode``, cut to ``length`` (None: not cut) as transformers cuts: the text's tokens on
        ``truncation_side``, the special tokens (BOS, EOS) always kept -- a left cut never drops the BOS."""
        ids = self._encode(text, add_special_tokens)
        if length is None or len(ids) <= length:
            return ids
        plain = self._encode(text, False)
        start = next((k for k in range(len(ids) - len(plain) + 1) if ids[k:k + len(plain)] == plain), 0)
        prefix, suffix = ids[:start], ids[start + len(plain):]
        keep = max(length - len(prefix) - len(suffix), 0)
        kept = plain[:keep] if self.truncation_side == "right" else plain[len(plain) - keep:]
        return prefix + kept + suffix

    def pad(self, encoded_inputs, padding=True, max_length=None, pad_to_multiple_of=None, padding_side=None,
            return_attention_mask=None, return_tensors=None, verbose=True):
        """Pad a batch to one length (transformers' ``tokenizer.pad``, as data collators call it).

        ``encoded_inputs``: ``{"input_ids": rows, ...}`` or a list of examples ``[{"input_ids": ids, ...}]``;
        rows may be lists, arrays or Tensors; one example (``{"input_ids": ids}``) comes back as one row.
        ``input_ids`` are padded with ``pad_token_id``, a given ``attention_mask`` with 0s (else one is made),
        ``special_tokens_mask`` with 1s; other keys (``labels``) are passed through unpadded, as transformers.
        As transformers: ``padding`` is read as in the call (a bad name is its ValueError; "max_length" without
        ``max_length`` pads to ``model_max_length``, or not at all when the tokenizer sets none), padding without a
        pad token is refused even when every row already has the length, ``return_attention_mask=False`` neither
        makes nor pads a mask (one given is passed through as it is), and rows given as Tensors (arrays) come back
        as Tensors (arrays) unless ``return_tensors`` says otherwise."""
        return_tensors = return_tensors or _tensor_kind_of_rows(encoded_inputs)
        features = _features(encoded_inputs)
        single = bool(features["input_ids"]) and not isinstance(features["input_ids"][0], list)
        if single:
            features = {k: [v] for k, v in features.items()}
        rows = features["input_ids"]
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if return_attention_mask and "attention_mask" not in features:
            features["attention_mask"] = [[1] * len(r) for r in rows]
        side = padding_side or self.padding_side
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        padding, _, max_length = self._padding_truncation(padding, None, max_length, pad_to_multiple_of, verbose)
        width = _padded_width(rows, padding, max_length, pad_to_multiple_of)
        if width is not None and any(len(r) < width for r in rows):
            fills = {"input_ids": self.pad_token_id, "special_tokens_mask": 1,
                     "token_type_ids": self.pad_token_type_id, **({"attention_mask": 0} if return_attention_mask else {})}
            for key, fill in fills.items():
                if key in features:
                    features[key] = [_padded(row, width, fill, side) for row in features[key]]
        out = {k: _as_tensor(v, return_tensors, k) for k, v in features.items()}
        return BatchEncoding({k: v[0] for k, v in out.items()} if single else out)

    # --- decoding --------------------------------------------------------------------------------
    def decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None, **kwargs):
        """The text of ``token_ids``: a list, a NumPy array or a Tensor row (``out[0]``), or one id.
        A batch (2-D: ``generate``'s whole output) gives a list of texts, as transformers 5 does."""
        _check_decode_options(kwargs)
        rows = _rows(token_ids)
        if isinstance(rows, (list, tuple)) and rows and isinstance(_rows(rows[0]), (list, tuple)):
            return self.batch_decode(rows, skip_special_tokens, clean_up_tokenization_spaces)
        return self._cleaned_up(self._decode(_ids_to_decode(rows), skip_special_tokens), clean_up_tokenization_spaces)

    def batch_decode(self, sequences, skip_special_tokens=False, clean_up_tokenization_spaces=None, **kwargs):
        """One text per row of ``sequences`` (a 2-D Tensor or array, or a list of rows). One flat
        sequence is decoded as a batch of one, with transformers' deprecation warning."""
        _check_decode_options(kwargs)
        rows = _rows(sequences)
        if rows and not isinstance(_rows(rows[0]), (list, tuple)):
            warnings.warn("Passing a single sequence to `batch_decode` is deprecated and will be removed in a "
                          "future version, use `decode` instead.", FutureWarning, stacklevel=2)
            rows = [rows]
        return [self._cleaned_up(self._decode(_ids_to_decode(row), skip_special_tokens), clean_up_tokenization_spaces)
                for row in rows]

    def _cleaned_up(self, text, clean_up_tokenization_spaces):
        """transformers' decode-time ``clean_up_tokenization_spaces``: the call's value, else the tokenizer's
        (tokenizer_config.json's, False by default)."""
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self._clean_up(text) if clean_up_tokenization_spaces else text

    def _clean_up(self, text):
        raise NotImplementedError("clean_up_tokenization_spaces=True is not implemented for minilora's byte "
                                  "tokenizer (the text is decoded as the tokenizer gives it)")

    # --- files -----------------------------------------------------------------------------------
    def save_pretrained(self, save_directory):
        """Write ``tokenizer.json``, ``tokenizer_config.json`` and the chat template's files (transformers'
        AutoTokenizer reads them, and so does ``minilora.tokenizer.from_pretrained``). Returns the paths written, in
        transformers' order."""
        from .checkpoint import atomic_folder
        if os.path.isfile(save_directory):
            raise ValueError(f"save_pretrained needs a directory, but {save_directory!r} is a file")
        config = {"tokenizer_class": self._saved_class, "bos_token": self.bos_token,
                  "eos_token": self.eos_token, "pad_token": self.pad_token, "padding_side": self.padding_side,
                  "truncation_side": self.truncation_side, "model_max_length": self.model_max_length,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces}
        config.update({f"{kind}_token": getattr(self, f"{kind}_token") for kind in SPECIAL_KINDS[3:]
                       if getattr(self, f"{kind}_token") is not None})
        if self.extra_special_tokens:
            config["extra_special_tokens"] = list(self.extra_special_tokens)
        templates = _chat_template_files(self.chat_template)  # (transformers 5's files: none in the config)
        if self.split_special_tokens:
            config["split_special_tokens"] = True
        config.update(self._class_config())
        # the files as one unit: never a new vocabulary beside an old config (an old template is not kept either)
        with atomic_folder(save_directory, replaces=(CHAT_TEMPLATE_FILE, CHAT_TEMPLATE_DIR)) as tmp:
            with open(os.path.join(tmp, TOKENIZER_FILE), "w", encoding="utf-8") as f:
                f.write(self._backend().to_str(pretty=True))
            with open(os.path.join(tmp, TOKENIZER_CONFIG_FILE), "w", encoding="utf-8") as f:  # (transformers' text)
                f.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
            for name, template in templates.items():
                os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
                with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                    f.write(template)
        # (transformers' order: the config, the template files, then the vocabulary)
        return tuple(os.path.join(save_directory, name) for name in (TOKENIZER_CONFIG_FILE, *templates, TOKENIZER_FILE))

    # --- chat templates --------------------------------------------------------------------------
    def get_chat_template(self, chat_template=None, tools=None):
        """transformers' ``get_chat_template``: the template text a call renders. With named templates (a dict, from
        ``additional_chat_templates/`` or a list in tokenizer_config.json) ``chat_template`` may be a name; without
        one, ``tool_use`` when ``tools`` are given, else ``default``. A ``chat_template`` that names none is the
        template itself."""
        if isinstance(self.chat_template, dict):
            templates = self.chat_template
            if chat_template is not None and chat_template in templates:
                return templates[chat_template]
            if chat_template is None:
                if tools is not None and "tool_use" in templates:
                    return templates["tool_use"]
                if "default" not in templates:
                    raise ValueError("This model has multiple chat templates with no default specified! Please either "
                                     "pass a chat template or the name of the template you wish to use to the "
                                     "`chat_template` argument. Available template names are "
                                     f"{sorted(templates)}.")
                return templates["default"]
        elif chat_template is None:
            if self.chat_template is None:
                raise ValueError("Cannot use chat template functions because tokenizer.chat_template is not set and "
                                 "no template argument was passed!")
            return self.chat_template
        return chat_template

    def apply_chat_template(self, conversation, tools=None, documents=None, chat_template=None,
                            add_generation_prompt=False, continue_final_message=False, tokenize=True,
                            sanitize_control_tokens=False, padding=False, truncation=False, max_length=None,
                            return_tensors=None, return_dict=True, return_assistant_tokens_mask=False,
                            tokenizer_kwargs=None, **template_kwargs):
        """Render ``[{"role": ..., "content": ...}, ...]`` with the tokenizer's Jinja chat template
        (as transformers does, in a sandbox), then tokenize it unless ``tokenize=False``.
        The template writes the special tokens itself, so none are added when tokenizing.
        As transformers: other keyword arguments are the template's variables (``enable_thinking=False``),
        ``tokenizer_kwargs`` go to the tokenizer call."""
        template = self.get_chat_template(chat_template, tools)
        if sanitize_control_tokens:
            raise NotImplementedError("apply_chat_template(sanitize_control_tokens=True) is not implemented in "
                                      "minilora")
        if return_assistant_tokens_mask and not (return_dict and tokenize):
            raise ValueError("`return_assistant_tokens_mask=True` requires `return_dict=True` and `tokenize=True`")
        if return_assistant_tokens_mask and not re.search(r"\{%-?\s*generation\s*-?%\}", template):
            warnings.warn("return_assistant_tokens_mask==True but chat template does not contain `{% generation %}` "
                          "keyword: the mask is all zeros (the template marks no assistant text)")
        if isinstance(conversation, (list, tuple)) and not conversation:
            raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
        if continue_final_message and add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt are not compatible. Use "
                             "continue_final_message when you want the model to continue the final message, and "
                             "add_generation_prompt when you want to add a header that will prompt it to start a new "
                             "assistant message instead.")
        if continue_final_message and return_assistant_tokens_mask:
            raise ValueError("continue_final_message is not compatible with return_assistant_tokens_mask.")
        batched = isinstance(conversation[0], (list, tuple)) or hasattr(conversation[0], "messages")
        variables = _plain_data({"tools": _tool_schemas(tools), "documents": _checked_documents(documents),
                                 **self.special_tokens_map, **template_kwargs})
        variables["add_generation_prompt"] = add_generation_prompt
        rendered = [_render_chat(template, _chat_messages(chat), continue_final_message, variables,
                                 return_assistant_tokens_mask)
                    for chat in (conversation if batched else [conversation])]
        texts = [text for text, _ in rendered]
        if not tokenize:
            return texts if batched else texts[0]
        kwargs = dict(tokenizer_kwargs or {})
        if return_assistant_tokens_mask:
            kwargs["return_offsets_mapping"] = True  # each token's characters, to find the assistant's
        out = self(texts if batched else texts[0], add_special_tokens=False, padding=padding,
                   truncation=truncation, max_length=max_length, return_tensors=return_tensors, **kwargs)
        if return_assistant_tokens_mask:
            offsets = out.pop("offset_mapping")
            offsets = _rows(offsets) if batched or return_tensors else [_rows(offsets)]
            masks = [_assistant_mask(row, spans) for row, (_, spans) in zip(offsets, rendered)]
            out["assistant_masks"] = _as_tensor(masks, return_tensors, "assistant_masks") if batched or return_tensors \
                else masks[0]
        return out if return_dict else out["input_ids"]


def _assistant_mask(offsets, spans):
    """1 for each token overlapping a ``{% generation %}`` span of the rendered text (transformers' rule:
    a span cut by truncation keeps its remaining tokens), else 0."""
    mask, span = [0] * len(offsets), 0
    for index, (start, end) in enumerate(offsets):
        while span < len(spans) and start >= spans[span][1]:
            span += 1
        if span == len(spans):
            break
        if end > spans[span][0]:
            mask[index] = 1
    return mask


def _tool_schemas(tools):
    """``tools`` as the template sees them: JSON-schema dicts, passed as given."""
    if tools is None:
        return None
    for tool in tools:
        if callable(tool) and not isinstance(tool, dict):
            raise NotImplementedError("apply_chat_template(tools=[a Python function]): minilora does not build JSON "
                                      "schemas from type hints and docstrings; pass each tool as its JSON-schema dict "
                                      "(transformers.utils.get_json_schema(function) writes one)")
        if not isinstance(tool, dict):
            raise ValueError("Tools should either be a JSON schema, or a callable function with type hints and a "
                             "docstring suitable for auto-conversion to a schema.")
    return list(tools)


def _checked_documents(documents):
    if documents is not None and not all(isinstance(document, dict) for document in documents):
        raise TypeError("Documents should be a list of dicts with 'title' and 'text' keys!")
    return documents


# decode keywords transformers' fast tokenizers take and change nothing with: the slow tokenizers' spacing of special
# tokens (a fast tokenizer's decoder writes them as they are) and the seq2seq classes' source switch (5.x ignores it)
_DECODE_OPTIONS_WITHOUT_EFFECT = ("spaces_between_special_tokens", "use_source_tokenizer")


def _check_decode_options(options):
    """decode's other keywords: the ones without effect taken, anything else refused by name (transformers passes
    unknown ones on to a decoder that drops them: a misspelt skip_special_tokens would pass unnoticed)."""
    unknown = sorted(set(options) - set(_DECODE_OPTIONS_WITHOUT_EFFECT))
    if unknown:
        raise TypeError(f"decode() got unexpected keyword arguments {unknown}: minilora's decode takes "
                        f"skip_special_tokens, clean_up_tokenization_spaces and {list(_DECODE_OPTIONS_WITHOUT_EFFECT)}")


def _refuse_unknown_call_options(options):
    """Keywords transformers' call would pass on and minilora does not implement: refused by name, never ignored."""
    known = {"add_special_tokens", "padding", "truncation", "max_length", "stride", "is_split_into_words",
             "pad_to_multiple_of", "padding_side", "return_tensors", "return_token_type_ids", "return_attention_mask",
             "return_overflowing_tokens", "return_special_tokens_mask", "return_offsets_mapping", "return_length",
             "split_special_tokens", "verbose"}
    used = sorted(k for k, v in options.items() if k not in known and v not in (None, False))
    if used:
        raise NotImplementedError(f"tokenizer call: {used} not implemented in minilora")
    for key in [k for k in options if k not in known]:
        options.pop(key)


PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("only_first", "only_second", "longest_first", "do_not_truncate")


def _strategy(value, names, enum_name, true):
    """A padding or truncation argument (bool, name or transformers' enum) -> its name, or False for none."""
    value = getattr(value, "value", value)  # transformers' PaddingStrategy / TruncationStrategy enums
    if value is None or value is False or value == names[-1]:
        return False
    if value is True:
        return true
    if value not in names:
        raise ValueError(f"{value!r} is not a valid {enum_name}, please select one of {list(names)}")
    return value


def _check_text_input(text, name):
    """transformers' accepted inputs: a text, a list of texts, a list of words, a list of lists of words."""
    def valid(t, depth=0):
        if isinstance(t, str):
            return True
        if isinstance(t, (list, tuple)) and depth < 3:
            return not t or valid(t[0], depth + 1)
        return False
    if not valid(text):
        raise ValueError(f"{name} input must be of type `str` (single example), `list[str]` (batch or single "
                         "pretokenized example) or `list[list[str]]` (batch of pretokenized examples), got "
                         f"{type(text).__name__}")


@contextlib.contextmanager
def _backend_settings(backend, truncation, padding, split_special_tokens):
    """The backend's truncation, padding and special-token reading set for one call, then put back (the
    backend is also what ``encode`` and ``save_pretrained`` use: a call must not leave its settings there)."""
    saved = backend.truncation, backend.padding, backend.encode_special_tokens
    try:
        backend.enable_truncation(**truncation) if truncation else backend.no_truncation()
        backend.enable_padding(**padding) if padding else backend.no_padding()
        backend.encode_special_tokens = split_special_tokens
        yield backend
    finally:
        backend.enable_truncation(**saved[0]) if saved[0] else backend.no_truncation()
        backend.enable_padding(**saved[1]) if saved[1] else backend.no_padding()
        backend.encode_special_tokens = saved[2]


def _features(encoded_inputs):
    """``tokenizer.pad``'s input as ``{key: [row as a list, ...]}``: a dict of rows (a BatchEncoding) or
    a list of examples (dicts with the same keys), the rows lists, arrays or Tensors."""
    if isinstance(encoded_inputs, (list, tuple)):
        if not encoded_inputs or not all(isinstance(e, dict) for e in encoded_inputs):
            raise ValueError("tokenizer.pad needs a dict of rows or a non-empty list of examples (dicts)")
        encoded_inputs = {k: [e[k] for e in encoded_inputs] for k in encoded_inputs[0]}
    if "input_ids" not in encoded_inputs:
        raise ValueError("You should supply an encoding or a list of encodings to this method that includes "
                         f"input_ids, but you provided {list(encoded_inputs)}")
    return {k: _list_rows(v) for k, v in encoded_inputs.items()}


def _tensor_kind_of_rows(encoded_inputs):
    """"pt" when ``tokenizer.pad``'s input_ids are minilora Tensors, "np" when arrays, else None (lists): what
    transformers' pad gives back by default."""
    rows = encoded_inputs[0].get("input_ids") if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and \
        isinstance(encoded_inputs[0], dict) else encoded_inputs.get("input_ids") if isinstance(encoded_inputs, dict) \
        else None
    if isinstance(rows, (list, tuple)) and rows:
        rows = rows[0]
    from .tensor import Tensor
    return "np" if isinstance(rows, np.ndarray) else "pt" if isinstance(rows, Tensor) else None


def _list_rows(values):
    """Rows (or one row) of ids as lists: a 2-D array or Tensor, or a list of rows of any kind."""
    rows = [_rows(row) for row in _rows(values)]
    return [list(row) if isinstance(row, (list, tuple)) else row for row in rows]


def _padded(row, width, fill, side):
    extra = [fill] * (width - len(row))
    return extra + row if side == "left" else row + extra


def _padded_width(rows, padding, max_length, pad_to_multiple_of):
    """The length every row is padded to, or None (no padding)."""
    if not padding:  # (the strategy as _padding_truncation resolved it: "max_length" comes with its max_length)
        return None
    width = max_length if padding == "max_length" else max((len(r) for r in rows), default=0)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    return width


TENSOR_TYPES = ("pt", "np")  # what return_tensors= gives in minilora: minilora Tensors, NumPy arrays


def _as_tensor(rows, return_tensors, key="input_ids"):
    """``rows`` (lists of ints) as ``return_tensors`` asks: None keeps the lists, "np" an int64 array,
    "pt" an int64 minilora Tensor on the CPU (minilora is this project's torch; transformers' "pt" is a
    CPU torch.Tensor too, moved with ``inputs.to(device)``)."""
    if return_tensors is None:
        return rows
    kind = _tensor_type(return_tensors)
    ragged = len({len(r) if isinstance(r, list) else -1 for r in rows}) > 1
    if ragged and kind == "np" and all(isinstance(r, list) for r in rows):  # transformers 5: an array of arrays
        array = np.empty(len(rows), dtype=object)
        array[:] = [np.array(row) for row in rows]  # (each row as NumPy reads it: an empty one float64, as there)
        return array
    if ragged:
        raise ValueError(f"Unable to create tensor: the rows of {key!r} have different lengths; activate padding "
                         "(padding=True) and/or truncation to have batched tensors of the same length.")
    inferred = np.array(rows)
    # ids and masks are int64; a float feature (a regression "label" passed through tokenizer.pad) keeps
    # its floats, as transformers' torch.tensor (float32) and np.array (float64) do
    floats = inferred.size and inferred.dtype.kind == "f"
    array = inferred if floats else np.array(rows, dtype=np.int64)
    if kind == "np":
        return array
    from .tensor import tensor
    return tensor(array.astype(np.float32) if floats else array, device="cpu")


def _tensor_type(return_tensors):
    """"pt" or "np" (also as transformers' TensorType enum); "mlx" (an optional backend there) is not in
    minilora; anything else ("tf", "jax": dropped by transformers 5) is transformers' ValueError."""
    name = getattr(return_tensors, "value", return_tensors)  # transformers' TensorType enum
    if name == "mlx":
        raise NotImplementedError("return_tensors='mlx' is not implemented in minilora: use 'pt' (minilora "
                                  "Tensors), 'np' (NumPy arrays) or None (lists)")
    if name not in TENSOR_TYPES:
        raise ValueError(f"{return_tensors!r} is not a valid TensorType, please select one of {list(TENSOR_TYPES)} "
                         "('pt': minilora Tensors, 'np': NumPy arrays; None: lists)")
    return name


def _rows(values):
    """A value of a BatchEncoding (list, array or Tensor) as Python lists."""
    return values.tolist() if hasattr(values, "tolist") else values


_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "  # transformers' marker for the end of the message to continue


_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # a message's reasoning, by its names


def _chat_messages(chat):
    """A conversation as the template sees it (transformers' normalization): plain dicts (dataclasses and pydantic
    messages converted), keys whose value is None dropped (an API's ``content=None`` must not render "None"), the
    reasoning under each of its names, and only plain data (the sandbox never sees the caller's objects)."""
    messages = []
    for message in _plain_data(getattr(chat, "messages", chat)):
        if not isinstance(message, dict):
            raise TypeError(f"Chat messages should be dicts, dataclasses or pydantic models, but got {message!r}.")
        message = {key: value for key, value in message.items() if value is not None}
        reasoning = next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        messages.append(message)
    return messages


def _plain_data(value):
    """``value`` rebuilt from JSON types (transformers' rule for what a template may see); anything else becomes a
    placeholder naming its type."""
    import dataclasses
    if value is None or type(value) in (str, int, float, bool):
        return value
    for kind in (bool, str, int, float):
        if isinstance(value, kind):  # a subclass (an enum, a NumPy scalar) loses its methods
            return kind(value.item() if isinstance(value, np.generic) else value)
    if isinstance(value, np.generic):
        return _plain_data(value.item())
    if isinstance(value, dict):
        return {_plain_data(key): _plain_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_data(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain_data(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):  # pydantic models (the OpenAI SDK's messages)
        return _plain_data(value.model_dump())
    return f"<{type(value).__name__}>"


def _tag_final_message(messages, continue_final_message, template):
    """Mark where the final message ends (transformers' tag, cut off after rendering); returns its text."""
    field = continue_final_message if isinstance(continue_final_message, str) else "content"
    final = messages[-1].get(field)
    if final is None:
        raise ValueError(f'continue_final_message is set but the final message has no "{field}" to continue!')
    fields = [field]
    if field in _REASONING_FIELDS:  # reasoning is under several names: tag each, the template reads one
        fields = [name for name in _REASONING_FIELDS if messages[-1].get(name) == final]
    if not any(name in template for name in fields):
        raise ValueError(f'continue_final_message is set to "{field}" but this is not an accepted field in the '
                         "chat_template")
    message = dict(messages[-1])
    if isinstance(final, (list, tuple)):  # content blocks: the last one with text is continued
        blocks = [dict(block) for block in final]
        last = next((block for block in reversed(blocks) if "text" in block), None)
        if last is None:
            raise ValueError("continue_final_message is set but we could not find any text to continue in the final "
                             "message!")
        final, last["text"] = last["text"], last["text"] + _CONTINUE_TAG
        message[field] = blocks
    else:
        message.update({name: final + _CONTINUE_TAG for name in fields})
    messages[-1] = message
    return final


def _render_chat(template, messages, continue_final_message, variables, track_generation):
    """The text of one conversation, and the character spans of its ``{% generation %}`` blocks (with
    ``track_generation``): transformers' sandboxed Jinja environment, its ``tojson`` and ``strftime_now``."""
    if continue_final_message:
        final = _tag_final_message(messages, continue_final_message, template)
    blocks, spans = [], []
    compiled = _chat_environment(blocks, spans if track_generation else None).from_string(template)
    for block in compiled.generate(messages=messages, **variables):
        blocks.append(block)
    text = "".join(blocks)
    if continue_final_message:  # cut the text right after the final message, as transformers
        if final.strip() not in text or _CONTINUE_TAG.strip() not in text:
            raise ValueError("continue_final_message is set but the final message does not appear in the chat after "
                             "applying the chat template!")
        at = text.rindex(_CONTINUE_TAG.strip())
        text = text[:at] if text[at:at + len(_CONTINUE_TAG)] == _CONTINUE_TAG else text[:at].rstrip()
    return text, spans


def _chat_environment(blocks, spans):
    """transformers' chat-template environment; its ``{% generation %}`` block records where the assistant's
    text lands in the output (``spans``, character offsets into the joined ``blocks``)."""
    try:
        import jinja2
        from jinja2.ext import Extension
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ImportError("apply_chat_template needs jinja2: pip install jinja2") from None

    class GenerationBlocks(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_generation"), [], [], body).set_lineno(lineno)

        def _generation(self, caller):
            text = caller()
            if spans is not None:
                start = len("".join(blocks))
                spans.append((start, start + len(text)))
            return text

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # transformers' tojson: Jinja's own escapes HTML characters, which a prompt must not get
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        import datetime
        return datetime.datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlocks, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    return env


# transformers' clean_up_tokenization: the spaces a WordPiece decode leaves before punctuation and contractions
_TOKENIZATION_SPACES = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                        (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _is_split(text, kwargs):
    """A list of words given to ``encode`` with ``is_split_into_words=True``."""
    return bool(kwargs.get("is_split_into_words")) and isinstance(text, (list, tuple))


def _is_text_batch(text):
    """A non-empty list (or tuple) of texts, which transformers 5's ``encode`` encodes as a batch."""
    return isinstance(text, (list, tuple)) and bool(text) and all(isinstance(t, str) for t in text)


def _check_text(text):
    """encode() takes one string; anything else is transformers' ValueError (it was an AttributeError on
    bytes, None or a number, or the tokenizers library's TypeError)."""
    if not isinstance(text, str):
        raise ValueError("text input must be of type `str` (single example), got "
                         f"{type(text).__name__}: {text!r:.60}")


def _id_list(ids):
    """Ids as a list of Python ints, from an int, a list, an array or a minilora Tensor."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    return [int(i) for i in ids]


def _ids_to_decode(ids):
    """``_id_list`` for decode, which refuses float ids as transformers' (the tokenizers library's TypeError): a
    float Tensor of ids (a sampled or averaged one) must not be truncated to ids silently."""
    values = _rows(ids)
    values = [values] if not isinstance(values, (list, tuple)) else values
    if any(isinstance(value, (float, np.floating)) for value in values):
        raise TypeError("'float' object cannot be interpreted as an integer: decode takes integer token ids "
                        "(a float Tensor of ids: .long() it first)")
    return _id_list(values)


@functools.lru_cache(maxsize=None)  # (a table read per token: made once; callers only read it)
def _byte_to_char():
    """The 256 printable characters that stand for the 256 bytes in a byte-level ``tokenizer.json``
    (GPT-2's convention, which the ``tokenizers`` ByteLevel pre-tokenizer and decoder use): bytes that
    are printable keep their own character; the others are moved up past 255, in order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in keep]
    table = {b: chr(b) for b in keep}
    table.update({b: chr(256 + n) for n, b in enumerate(moved)})
    return table


class _AddedToken(NamedTuple):
    """An added token and its matching rules, as ``tokenizers.AddedToken`` holds them."""
    content: str
    single_word: bool = False  # matched only as a whole word (no word character on either side)
    lstrip: bool = False  # takes the whitespace before it
    rstrip: bool = False  # takes the whitespace after it
    normalized: bool = True  # matched in the normalized text (the byte tokenizer normalizes nothing)
    special: bool = False  # dropped by decode(..., skip_special_tokens=True)


def _added_token(token, special_tokens):
    """A string or ``tokenizers.AddedToken`` as the tokenizers library registers it: a string is normalized
    unless special; ``add_special_tokens`` makes any token special."""
    if isinstance(token, str):
        return _AddedToken(token, normalized=not special_tokens, special=special_tokens)
    return _AddedToken(token.content, token.single_word, token.lstrip, token.rstrip, token.normalized,
                       token.special or special_tokens)


_WORD_CHARACTER = re.compile(r"\w")


def _is_space(char):
    """Whitespace as the tokenizers library's ``\\s`` (Unicode White_Space: Python's isspace() less the
    \\x1c-\\x1f separators)."""
    return char.isspace() and char not in "\x1c\x1d\x1e\x1f"


def _token_matcher(tokens):
    """A regex finding the added ``tokens`` ({content: ...}) leftmost-longest, as the tokenizers library's
    Aho-Corasick automaton does: at each position the alternatives are tried longest first."""
    return re.compile("|".join(map(re.escape, sorted(tokens, key=len, reverse=True))))


def _split_on_tokens(text, tokens, pattern):
    """``text`` cut around the added ``tokens`` ({content: (id, _AddedToken)}, found by ``pattern``) as the
    tokenizers library cuts it: leftmost-longest matches, one scan (a match refused for ``single_word`` is
    skipped, not retried shorter); ``lstrip`` / ``rstrip`` take the whitespace beside it. A list of strings (text
    between them) and (token id, the text it took)."""
    pieces, done = [], 0  # done: where the text not yet given out starts
    for match in pattern.finditer(text):
        start, stop = match.span()
        token_id, token = tokens[match.group()]
        if token.single_word and ((start > 0 and _WORD_CHARACTER.match(text, start - 1))
                                  or _WORD_CHARACTER.match(text, stop)):
            continue
        while token.lstrip and start > done and _is_space(text[start - 1]):  # (never into an earlier match)
            start -= 1
        while token.rstrip and stop < len(text) and _is_space(text[stop]):
            stop += 1
        if done < start:
            pieces.append(text[done:start])
        pieces.append((token_id, text[start:stop]))  # (the text it took: tokenize() shows it)
        done = stop
    if done < len(text):
        pieces.append(text[done:])
    return pieces


class ByteTokenizer(_Tokenizer):
    """UTF-8 bytes as tokens: ids 0..255 are bytes, then ``<bos>`` 256, ``<eos>`` 257, ``<pad>`` 258.

    ``add_tokens`` / ``add_special_tokens`` add tokens from id 259 on (``len(tok)`` counts them; ``vocab_size``
    stays 259, as transformers counts): the text is cut around them first (``AddedToken``'s ``single_word``,
    ``lstrip``, ``rstrip`` as the tokenizers library applies them), the rest is bytes. ``<bos>`` / ``<eos>`` /
    ``<pad>`` written in a text stay bytes (the shipped model was trained so); added special tokens are read
    whole."""

    bos_token_id, eos_token_id, pad_token_id = 256, 257, 258
    special_tokens = {"<bos>": 256, "<eos>": 257, "<pad>": 258}
    vocab_size = 259
    # add_special_tokens=True adds <bos> (the shipped model was trained so); ``tok.add_eos_token = True`` adds <eos>
    # too, ``tok.add_bos_token = False`` drops <bos>: transformers' flags, as its tokenizer for the saved folder
    # loaded with add_bos_token=True applies them (update_post_processor; the saved tokenizer.json follows them)
    _add_bos_token, _add_eos_token = True, False

    def __init__(self):
        self._added = {}  # id -> _AddedToken, in the order added (tokenizers' AddedVocabulary)
        self._special_contents = set()  # every content once added as special (tokenizers never forgets one)

    def __len__(self):
        return self.vocab_size + sum(1 for token_id in self._added if token_id >= self.vocab_size)

    def _add_tokens(self, tokens, special_tokens):
        """The tokenizers library's rules: a token already added with the same flags is not counted; one whose
        text is already a token (a byte's character, an added one) keeps that id and takes the new flags; the
        rest get the next ids. ``<bos>`` / ``<eos>`` / ``<pad>`` are never read from text here: not added."""
        added = 0
        for token in map(lambda t: _added_token(t, special_tokens), tokens):
            if not token.content or token.content in self.special_tokens or token in self._added.values():
                continue
            token_id = self._token_id(token.content)
            self._added[len(self) if token_id is None else token_id] = token
            if token.special:
                self._special_contents.add(token.content)
            added += 1
        self.__dict__.pop("_call_backend", None)  # both rebuilt with the new tokens
        self.__dict__.pop("_matchers", None)
        return added

    def get_added_vocab(self):
        """``{token: id}`` of ``<bos>``, ``<eos>``, ``<pad>`` and the added tokens, in id order (what transformers
        answers for the saved folder)."""
        vocab = {**self.special_tokens, **{token.content: i for i, token in self._added.items()}}
        return dict(sorted(vocab.items(), key=lambda item: item[1]))

    def _split_on_added(self, text):
        """The text cut around the added tokens: those matched in the raw text first, then (in what is left)
        the normalized ones, as the tokenizers library does. A list of strings and (token id, text taken)."""
        if "_matchers" not in self.__dict__:
            passes = ({t.content: (i, t) for i, t in self._added.items() if t.normalized == normalized}
                      for normalized in (False, True))
            self._matchers = [(tokens, _token_matcher(tokens)) for tokens in passes if tokens]
        pieces = [text]
        for tokens, pattern in self._matchers:
            pieces = [part for piece in pieces
                      for part in (_split_on_tokens(piece, tokens, pattern) if isinstance(piece, str) else [piece])]
        return pieces

    def _encode(self, text, add_special_tokens):
        ids = [i for piece in self._split_on_added(text)
               for i in (piece.encode("utf-8") if isinstance(piece, str) else [piece[0]])]
        return self._with_special_tokens(ids, [self.bos_token_id], [self.eos_token_id]) if add_special_tokens else ids

    def _with_special_tokens(self, row, bos, eos):
        """``row`` between the <bos> and <eos> the flags add (ids or token strings)."""
        return (bos if self._add_bos_token else []) + row + (eos if self._add_eos_token else [])

    def _update_post_processor(self):
        self.__dict__.pop("_call_backend", None)  # (rebuilt with the flags' post-processor)

    def tokenize(self, text, pair=None, add_special_tokens=False):
        """The token strings (bytes as GPT-2's characters, an added token as the text it took), on the plain path
        without the tokenizers package; a pair as the tokenizers backend answers it."""
        if pair is not None:
            return super().tokenize(text, pair, add_special_tokens)
        _check_text(text)
        to_char = _byte_to_char()
        tokens = [token for piece in self._split_on_added(text)
                  for token in ([to_char[b] for b in piece.encode("utf-8")] if isinstance(piece, str) else [piece[1]])]
        return self._with_special_tokens(tokens, [self.bos_token], [self.eos_token]) if add_special_tokens else tokens

    def _decode(self, token_ids, skip_special_tokens):
        """Text of the ids ``token_ids`` (a list). Special tokens are written as ``<eos>`` etc., or dropped
        with ``skip_special_tokens=True``; byte sequences that are not valid UTF-8 (a cut-off character)
        become U+FFFD."""
        try:  # only bytes (a generated text, decoded again at every step by the server): one C call
            return bytes(token_ids).decode("utf-8", errors="replace")
        except ValueError:  # a special or added token (or an id out of range): token by token
            pass
        names = {i: name for name, i in self.special_tokens.items()}
        names.update({i: token.content for i, token in self._added.items() if i >= self.vocab_size})
        special = set(self.special_tokens.values()) | {i for i, name in names.items() if name in self._special_contents}
        out, pending = [], bytearray()
        for i in token_ids:
            if 0 <= i < 256:
                pending.append(i)
                continue
            if i not in names:
                raise ValueError(f"token id {i} is outside the byte tokenizer's vocabulary (0..{len(self) - 1})")
            out.append(pending.decode("utf-8", errors="replace"))
            pending = bytearray()
            if not (skip_special_tokens and i in special):
                out.append(names[i])
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    def _token(self, token_id):
        names = {i: name for name, i in self.special_tokens.items()}
        names.update({i: token.content for i, token in self._added.items()})
        return names.get(token_id) or _byte_to_char()[token_id]

    def _encodes_alone(self, options):
        """Plain calls need no ``tokenizers`` package; offsets, pairs, words, overflow... go through
        ``_backend()``, the same tokenizer as a tokenizers.Tokenizer (as saved)."""
        return not any(options.get(name) for name in self._BACKEND_OPTIONS)

    def _backend_for_calls(self):
        if "_call_backend" not in self.__dict__:
            # "<eos>" written in a text is five bytes here (``_encode``): the three are plain vocabulary
            # there, never matched in the text, while added special tokens are
            self._call_backend = self._backend(text_reads_special_tokens=False)
        return self._call_backend

    def _token_id(self, token):
        if token in self.special_tokens:
            return self.special_tokens[token]
        added = next((i for i, t in self._added.items() if t.content == token), None)
        return added if added is not None else _char_to_byte().get(token)

    def _backend(self, text_reads_special_tokens=True):
        """The same tokenizer as a ``tokenizers.Tokenizer`` (byte-level BPE without merges, then the added
        tokens with their flags), for ``save_pretrained``. Loaded back (by transformers or minilora) it gives the
        same ids for every text, except that ``<bos>`` / ``<eos>`` / ``<pad>`` written in the text itself are read
        as those tokens (not with ``text_reads_special_tokens=False``: the three are then plain vocabulary)."""
        try:
            from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
        except ImportError:
            raise ImportError("save_pretrained needs the tokenizers package: pip install tokenizers") from None
        vocab = dict(_char_to_byte())  # (a copy: the special tokens may join it)
        if not text_reads_special_tokens:
            vocab.update(self.special_tokens)
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tokenizer.decoder = decoders.ByteLevel()
        if text_reads_special_tokens:
            tokenizer.add_special_tokens(list(self.special_tokens))  # ids 256, 257, 258 in this order
        for token_id, token in sorted(self._added.items()):  # in id order: each new one gets the next id
            tokenizer.add_tokens([AddedToken(**token._asdict())])
        tokenizer.post_processor = self._bos_eos_post_processor()
        return tokenizer

    def __repr__(self):
        added = f", added={len(self) - self.vocab_size}" if len(self) > self.vocab_size else ""
        return f"ByteTokenizer(vocab_size=259, bos=256, eos=257, pad=258{added})"


def _is_token(value):
    """A string or a ``tokenizers.AddedToken`` (checked by name: the byte tokenizer needs no tokenizers package)."""
    return isinstance(value, str) or type(value).__name__ == "AddedToken"


class HFTokenizer(_Tokenizer):
    """A ``tokenizers.Tokenizer`` behind minilora's tokenizer interface."""

    def __init__(self, tokenizer, bos_token=None, eos_token=None, pad_token=None):
        self.tokenizer = tokenizer
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        return from_pretrained(path, **kwargs)

    def _token(self, token_id):
        return self.tokenizer.id_to_token(token_id)

    def _token_id(self, token):
        return self.tokenizer.token_to_id(token)

    def _backend(self):
        return self.tokenizer

    @property
    def backend_tokenizer(self):
        """The ``tokenizers.Tokenizer`` itself (transformers' name)."""
        return self.tokenizer

    def convert_tokens_to_string(self, tokens):
        """The text of ``tokens`` (``tokenize``'s pieces) through the decoder, joined by spaces without one."""
        decoder = self.tokenizer.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)

    def _add_tokens(self, tokens, special_tokens):
        # the backend's own rules, as transformers' fast tokenizers call them: a string is an AddedToken that
        # is normalized unless special; a token already in the vocabulary keeps its id
        self.__dict__.pop("_byte_rules", None)  # (token_bytes reads the added tokens again)
        return self.tokenizer.add_special_tokens(tokens) if special_tokens else self.tokenizer.add_tokens(tokens)

    # transformers' TokenizersBackend.add_bos_token / add_eos_token: False after loading (the file's post-processor
    # decides what a call adds; CodeLlama's add_bos_token is True); setting either rebuilds the post-processor from
    # both, so the fine-tuning recipe's ``tok.add_eos_token = True`` alone gives "$A </s>", without the file's BOS
    _add_bos_token = _add_eos_token = False

    def _update_post_processor(self):
        self.tokenizer.post_processor = self._bos_eos_post_processor()

    def _class_init(self, settings):
        """What the class's __init__ sets from its arguments (``settings``: tokenizer_config.json's and the caller's):
        nothing here (the translation classes' languages)."""

    @property
    def vocab_size(self):
        """The base vocabulary, without added tokens, as transformers counts it; ``len(tok)`` counts all."""
        return self.tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self):
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def _encode(self, text, add_special_tokens):
        """Ids of ``text``; ``add_special_tokens`` runs the tokenizer's post-processor (which is what
        adds BOS for Llama tokenizers). Never cut or padded by settings a tokenizer.json may carry: as
        transformers, only the call's own options cut or pad."""
        with _backend_settings(self.tokenizer, None, None, False):
            return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def _decode(self, token_ids, skip_special_tokens):
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def _clean_up(self, text):
        """transformers 5 skips the clean-up for a BPE model (it would take the space before a word that starts
        with "." or ","), with a warning; other models (WordPiece, ...) get its spaces-before-punctuation fix."""
        if type(self.tokenizer.model).__name__ == "BPE":
            warnings.warn("Ignoring clean_up_tokenization_spaces=True for BPE tokenizer: the clean_up_tokenization "
                          "post-processing step is designed for WordPiece tokenizers and is destructive for BPE "
                          "(it strips spaces before punctuation)", stacklevel=4)
            return text
        for spaced, joined in _TOKENIZATION_SPACES:
            text = text.replace(spaced, joined)
        return text

    def __repr__(self):
        return (f"HFTokenizer(vocab_size={self.vocab_size}, bos={self.bos_token_id}, "
                f"eos={self.eos_token_id}, pad={self.pad_token_id})")


# Names special tokens go by in common tokenizers, tried when tokenizer_config.json does not say.
_GUESSES = {"bos": ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", "[CLS]"),
            "eos": ("</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>", "[SEP]"),
            "pad": ("<pad>", "[PAD]", "<|pad|>")}


CONFIG_SETTINGS = ("chat_template", "padding_side", "truncation_side", "model_max_length",
                   "clean_up_tokenization_spaces", "split_special_tokens")
# from_pretrained(folder, add_eos_token=True): transformers 5 ignores tokenizer_config.json's flags (the file's
# post-processor decides) but rebuilds the post-processor from flags given as arguments
POST_PROCESSOR_FLAGS = ("add_bos_token", "add_eos_token")
LOAD_FLAGS = ("fix_mistral_regex",)  # from_pretrained(folder, fix_mistral_regex=True): a Mistral folder's pattern
TRANSFORMERS_SPECIAL_ORDER = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")  # SPECIAL_TOKENS_ATTRIBUTES'


def from_file(path, bos_token=None, eos_token=None, pad_token=None, **settings):
    """Load a Hugging Face ``tokenizer.json`` (needs the ``tokenizers`` package).

    The special tokens come from the arguments, else from ``tokenizer_config.json`` next to the file,
    else from the class's defaults (Gemma's ``<bos>``, ``<mask>``, ...) or, for a class without them, the usual
    names (``<s>``, ``</s>``, ``<pad>``, ``<|begin_of_text|>``, ...). The rest of
    ``tokenizer_config.json`` is read too: ``chat_template``, ``padding_side``, ``truncation_side``,
    ``model_max_length``, ``clean_up_tokenization_spaces``, and ``legacy``, ``add_prefix_space``,
    ``trim_offsets`` for a class that rebuilds its pipeline (``_CLASS_RULES``); passed as arguments they override
    it, as in transformers (``from_pretrained(folder, padding_side="left")``, the "Generation with LLMs"
    tutorial's line). ``add_bos_token`` / ``add_eos_token`` as arguments rebuild the post-processor;
    ``fix_mistral_regex=True`` puts Mistral's split pattern in a Mistral Small 3.1-style file (``_mistral_regex``).
    """
    known = CONFIG_SETTINGS + CLASS_SETTINGS + POST_PROCESSOR_FLAGS + LOAD_FLAGS
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise TypeError(f"unexpected tokenizer arguments {unknown}: minilora's tokenizer takes bos_token, "
                        f"eos_token, pad_token and {', '.join(known)}")
    _check_config_values("tokenizer arguments", settings)
    try:
        import tokenizers  # noqa: F401 -- (said here, before any file is read)
    except ImportError:
        raise ImportError("from_file needs the tokenizers package: pip install tokenizers") from None
    path = os.fspath(path)
    if os.path.isdir(path):  # (a Mistral folder without tokenizer.json: its tekken.json, as transformers reads it)
        tekken = os.path.join(path, TEKKEN_FILE)
        path = os.path.join(path, TOKENIZER_FILE)
        if not os.path.isfile(path) and os.path.isfile(tekken):
            path = tekken
    if not os.path.isfile(path):
        _no_tokenizer_file(path)
    tekken = _is_tekken_file(path)
    tokenizer = _tekken_tokenizer(path) if tekken else _tokenizer_file(path)
    config = _tokenizer_config(os.path.join(os.path.dirname(path), TOKENIZER_CONFIG_FILE))
    config = _with_chat_template_files(config, os.path.dirname(path))
    tokenizer_class = _transformers_class(config.get("tokenizer_class"), path)
    _refuse_class_without_rule(tokenizer_class, path)
    # (a converted tekken.json reaches the class whole, as a tokenizer object: the class's pipeline is not applied)
    rule = None if tekken else _CLASS_RULES.get(tokenizer_class)
    chosen = _chosen_special_tokens(tokenizer, config, rule, {"bos": bos_token, "eos": eos_token, "pad": pad_token},
                                    path, guess=not tekken)
    class_settings = {**config, **{k: settings[k] for k in CLASS_SETTINGS if settings.get(k) is not None}}
    extra_for_class = rule.extra_special_tokens if rule else ()
    extra = _extra_special_tokens(config) + list(extra_for_class(class_settings) if callable(extra_for_class) else
                                                  extra_for_class)
    extra = list(dict.fromkeys(extra))
    if rule is not None and rule.pipeline is not None:  # the class's __init__, in its order
        tokenizer = _rebuilt_model(tokenizer, rule, chosen)
        rule.pipeline(tokenizer, class_settings)
    if rule is not None:  # (a class without a pipeline of its own runs the file, with its special tokens)
        _added_special_tokens(tokenizer, [chosen[kind] for kind in TRANSFORMERS_SPECIAL_ORDER] + extra,
                              lstrip=chosen["mask"] if rule.lstrip_mask else None,
                              normalized=rule.lstrip_mask == "normalized")
    else:  # an extra token missing from tokenizer.json was read as <unk>, where transformers adds it (a named
        _added_special_tokens(tokenizer, extra)  # one must be in the vocabulary: its typo is refused)
    _mistral_regex(tokenizer, os.path.dirname(path), settings.get("fix_mistral_regex"))
    out = (rule.tokenizer_type if rule else HFTokenizer)(tokenizer, chosen["bos"], chosen["eos"], chosen["pad"])
    for kind in SPECIAL_KINDS[3:]:
        setattr(out, f"{kind}_token", chosen[kind])
    if extra:
        out.extra_special_tokens = extra
    if rule is not None:
        out.model_input_names = list(rule.model_input_names)
        out._class_init(class_settings)
    if rule is not None and (rule.post_processor is not None or rule.pipeline is None):  # (saved to load back as
        # this class, _class_config: its own post-processor, or its call options over a file run as written)
        out._saved_class = tokenizer_class
        out._saved_settings = {key: value for key, value in class_settings.items()
                               if key in CLASS_SETTINGS and value is not None}
    # the padding side transformers' AutoTokenizer gives that class by default (set before the post-processor,
    # which Splinter's depends on)
    out.padding_side = "left" if tokenizer_class in _LEFT_PADDING_CLASSES else "right"
    for key in CONFIG_SETTINGS:
        value = settings[key] if settings.get(key) is not None else config.get(key)
        if value is not None:
            setattr(out, key, value)
    _post_processor_at_load(out, rule, {flag: settings[flag] for flag in POST_PROCESSOR_FLAGS
                                        if settings.get(flag) is not None})
    return out


# the vocabulary files transformers' slow (Python / SentencePiece) tokenizers read, which minilora does not
_OTHER_VOCABULARY_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "source.spm", "target.spm",
                           "vocab.json", "merges.txt", "vocab.txt", "tiktoken.model")


def _no_tokenizer_file(path):
    """The error for a path without a tokenizer file: a folder of a class minilora refuses (a Marian folder has its
    source.spm / target.spm, no tokenizer.json) names the class; else what the folder holds instead."""
    folder = os.path.dirname(path)
    config = _tokenizer_config(os.path.join(folder, TOKENIZER_CONFIG_FILE)) if os.path.isdir(folder) else {}
    _refuse_class_without_rule(_transformers_class(config.get("tokenizer_class"), path), path)
    others = [name for name in _OTHER_VOCABULARY_FILES if os.path.isfile(os.path.join(folder, name))]
    if others:
        raise FileNotFoundError(f"no tokenizer file at {path}: the folder has {', '.join(others)}, the files of a "
                                "slow (Python or SentencePiece) tokenizer, which minilora does not read; "
                                "transformers' save_pretrained of the loaded tokenizer writes a tokenizer.json")
    raise FileNotFoundError(f"no tokenizer file at {path}")


def _tokenizer_file(path):
    from tokenizers import Tokenizer
    try:
        return Tokenizer.from_file(path)
    except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
        from .checkpoint import other_format  # (a Git LFS pointer, a web page: say so)
        with open(path, "rb") as f:
            kind = other_format(f.read(64))
        raise ValueError(f"{path}: not a valid tokenizer.json ({f'it is {kind}' if kind else exc})") from None


def _is_tekken_file(path):
    """transformers' is_tekken_vocab_filename: a ".json" file whose name has "tekken" in it."""
    name = os.path.basename(path)
    return "tekken" in name and name.endswith(".json")


def _tekken_tokenizer(path):
    """Mistral's tekken.json as transformers 5.25 converts it without mistral-common (integrations/mistral's
    MistralConverter): the special tokens first (ids 0.. by rank, <SPECIAL_i> up to default_num_special_tokens),
    then the byte-level BPE of the ranked token bytes (cut to default_vocab_size), merges derived from the ranks,
    the file's split pattern, merges skipped for a whole vocabulary word (ignore_merges)."""
    import base64
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    config = raw["config"]
    special = raw.get("special_tokens")
    if special is None:  # (transformers then needs mistral-common for its default list: an ImportError there)
        raise ImportError(f"{path}: a tekken.json of the old format (no special_tokens list) takes its special tokens "
                          "from mistral-common's defaults, which minilora does not have; transformers needs the "
                          "mistral-common package for it (pip install mistral-common)")
    ranks = sorted(entry["rank"] for entry in special)
    if ranks != list(range(len(ranks))):  # transformers' ValueError
        raise ValueError(f"tekken.json special_tokens ranks must be contiguous starting at 0, got {ranks}")
    names = [token for _, token in sorted((entry["rank"], str(entry["token_str"])) for entry in special)]
    count = config.get("default_num_special_tokens")
    count = len(names) if count is None else count
    names += [f"<SPECIAL_{i}>" for i in range(len(names), count)]
    pieces = raw["vocab"]
    if config.get("default_vocab_size") is not None:
        pieces = pieces[:config["default_vocab_size"] - count]
    byte_ranks = {base64.b64decode(piece["token_bytes"]): rank for rank, piece in enumerate(pieces)}
    vocab, merges = _merges_from_ranks(byte_ranks)
    vocab = {**{token: rank + count for token, rank in vocab.items()}, **{name: i for i, name in enumerate(names)}}
    tokenizer = Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
    tokenizer.model.ignore_merges = True
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(config["pattern"]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(name, special=True) for name in names])
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _merges_from_ranks(byte_ranks):
    """A tiktoken-style {token bytes: rank} as a byte-level BPE vocabulary and merges (MistralConverter's
    _extract_merges): each token's splits into two ranked tokens, by the token's rank, then its parts' ranks."""
    table = _byte_to_char()

    def text(piece):
        return "".join(table[byte] for byte in piece)
    vocab, found = {}, []
    for token, rank in byte_ranks.items():
        vocab[text(token)] = rank
        splits = [(token[:i], token[i:], rank) for i in range(1, len(token))
                  if token[:i] in byte_ranks and token[i:] in byte_ranks]
        found += sorted(splits, key=lambda split: (byte_ranks[split[0]], byte_ranks[split[1]]))
    found.sort(key=lambda split: split[2])
    return vocab, [(text(left), text(right)) for left, right, _ in found]


def _chosen_special_tokens(tokenizer, config, rule, given, path, guess=True):
    """{kind: token or None}: the argument, else tokenizer_config.json's (a token it names must be in the
    vocabulary: named there, a typo would silently add a token), else (the key absent; its explicit null means
    "none") the class's default (``rule``; added to the vocabulary if missing, as transformers adds it) or, for a
    class without defaults, the usual name the vocabulary has (not for a tekken.json: transformers names none)."""
    chosen = {}
    for kind in SPECIAL_KINDS:
        token = given.get(kind)
        if token is None:
            token = _token_text(config.get(f"{kind}_token"))
            if token is not None and tokenizer.token_to_id(token) is None:  # name the file that says it
                raise ValueError(f"{os.path.join(os.path.dirname(path), TOKENIZER_CONFIG_FILE)}: {kind}_token "
                                 f"{token!r} is not in the vocabulary of {path}")
        if token is None and f"{kind}_token" not in config:
            token = rule.special_tokens.get(kind) if rule is not None else \
                next((t for t in _GUESSES.get(kind, ()) if guess and tokenizer.token_to_id(t) is not None), None)
        chosen[kind] = token
    return chosen


def _post_processor_at_load(tokenizer, rule, flags):
    """TokenizersBackend.__init__'s post-processor: the file's, rebuilt from add_bos_token / add_eos_token
    (update_post_processor) where the caller passed either, where the class passes one on (CodeLlama's
    add_bos_token=True) or rebuilds it (GPTNeoX), and where a rebuilt class's file has none."""
    tokenizer._add_bos_token = flags.get("add_bos_token", rule is not None and rule.add_bos_token)
    tokenizer._add_eos_token = flags.get("add_eos_token", False)
    file_has_none = tokenizer.tokenizer.post_processor is None
    if not flags and rule is not None and rule.post_processor_before is not None and \
            tokenizer.tokenizer.post_processor is None:  # (ALBERT's, set before the file's would replace it)
        tokenizer.tokenizer.post_processor = rule.post_processor_before(tokenizer)
    elif flags or (rule is not None and (rule.rebuilds_post_processor or tokenizer.tokenizer.post_processor is None)):
        tokenizer._update_post_processor()
    if rule is not None and rule.post_processor is not None:  # (set after all that, as the class's __init__ does)
        tokenizer.tokenizer.post_processor = rule.post_processor(tokenizer)
        if rule.post_init and (flags or file_has_none):  # (its last _post_init() puts the bos / eos one back)
            tokenizer._update_post_processor()


# transformers' tokenizer classes whose padding_side (a class attribute) is "left": a tokenizer_config.json
# that names one and sets no padding_side pads on the left in transformers (a Llama 2 checkpoint's
# "LlamaTokenizerFast"), every other class on the right.
_LEFT_PADDING_CLASSES = frozenset({"LlamaTokenizer", "CodeLlamaTokenizer", "GemmaTokenizer", "CohereTokenizer",
                                   "XLNetTokenizer", "Siglip2Tokenizer", "ErgoTokenizer"})


def _transformers_class(tokenizer_class, path):
    """The class transformers' AutoTokenizer loads the folder of ``path`` as, without its "Fast" suffix
    (transformers 5 merged the two): tokenizer_config.json's ``tokenizer_class``, unless the folder's config.json
    is a model type transformers registers another tokenizer for (models/auto/tokenization_auto.py's
    from_pretrained): a Mistral or Phi-3 model folder that names "LlamaTokenizer" is the generic
    TokenizersBackend there (its tokenizer.json runs as written), a folder that names no class gets its model
    type's. A "LlamaTokenizer" whose tokenizer.json is byte-level (Llama 3 style) is TokenizersBackend too
    (transformers' check: the text "ByteLevel" in the file). A name transformers exports as another class is that
    class ("ElectraTokenizer" is BertTokenizer: _CLASS_ALIASES). Where tokenizer_config.json names none,
    config.json's ``tokenizer_class`` is the folder's (transformers' fallback)."""
    model_config = _model_config(os.path.dirname(path))
    if tokenizer_class is None and isinstance(model_config.get("tokenizer_class"), str):
        tokenizer_class = model_config["tokenizer_class"]
    name = tokenizer_class.removesuffix("Fast") if isinstance(tokenizer_class, str) else None
    name = _CLASS_ALIASES.get(name, name)
    model_type = model_config.get("model_type")
    if name == "LlamaTokenizer" and model_type not in _MODEL_TYPES_WITH_WRONG_HUB_CLASS and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            if '"ByteLevel"' in f.read():
                return _GENERIC_CLASS
    if name is None and model_type in _MODEL_TYPES_WITHOUT_CONFIG:  # (no config class to map: transformers' generic)
        return _GENERIC_CLASS
    registered = _MODEL_TYPE_TOKENIZERS.get(model_type)
    registered = _CLASS_ALIASES.get(registered, registered)
    if registered is not None and registered != name:
        if registered != _GENERIC_CLASS and name is not None and model_type not in _MODEL_TYPES_WITH_WRONG_HUB_CLASS:
            registered = name  # (a model type with a class of its own leaves the config's class alone)
        return _GENERIC_CLASS if registered in ("PreTrainedTokenizer", "PythonBackend") else registered
    return name


def _model_config(folder):
    """A model folder's config.json ({} without one, or for a file that is no JSON object)."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


# Mistral's split pattern (tekken.json's): transformers' fix_mistral_regex puts it in place of the wrong one some
# Mistral tokenizer.json files were saved with (Mistral Small 3.1's)
_MISTRAL_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
                  r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
_MISTRAL_MODEL_TYPES = ("mistral", "mistral3", "voxtral", "ministral", "pixtral")


def _mistral_regex(backend, folder, fix):
    """TokenizersBackend._patch_mistral_regex, for a local folder: a vocabulary of more than 100000 tokens whose
    config.json is a Mistral model type (or names none) saved before transformers 5 may hold the wrong split
    pattern. ``fix`` (from_pretrained's fix_mistral_regex=True) puts Mistral's in first place (a Metaspace
    pre-tokenizer becomes byte-level behind it, as there); without it, transformers' warning."""
    config = _model_config(folder)
    if backend.get_vocab_size() <= 100000 or backend.pre_tokenizer is None or not config:
        return
    version = config.get("transformers_version")
    if (version and not _before_transformers_5(version)) or \
            config.get("model_type") not in (None, *_MISTRAL_MODEL_TYPES):
        return
    if not fix:
        if fix is None:
            warnings.warn(f"The tokenizer you are loading from '{folder}' with an incorrect regex pattern: "
                          "https://huggingface.co/mistralai/Mistral-Small-3.1-24B-Instruct-2503/discussions/84"
                          "#69121093e8b480e709447d5e. This will lead to incorrect tokenization. You should set the "
                          "`fix_mistral_regex=True` flag when loading this tokenizer to fix this issue.", stacklevel=4)
        return
    from tokenizers import Regex, pre_tokenizers
    split = pre_tokenizers.Split(pattern=Regex(_MISTRAL_REGEX), behavior="isolated")
    current = backend.pre_tokenizer
    if isinstance(current, pre_tokenizers.Sequence):
        current[0] = split
    else:
        if isinstance(current, pre_tokenizers.Metaspace):
            current = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        backend.pre_tokenizer = pre_tokenizers.Sequence([split, current])


def _before_transformers_5(version):
    """Whether a config.json's transformers_version is below 5.0.0 (its pre-releases included), as packaging reads
    it."""
    try:
        from packaging.version import Version
        return Version(version) < Version("5.0.0")
    except ImportError:  # (the major number: enough for a version a release wrote)
        return int(re.match(r"\d*", version).group() or 0) < 5
    except ValueError:  # (an unparsable version: packaging's InvalidVersion)
        return False


_GENERIC_CLASS = "TokenizersBackend"  # transformers 5's class that runs a tokenizer.json as written
# transformers 5.25's TOKENIZER_MAPPING_NAMES, every model type with a class (a model type not here, llama among
# them, follows tokenizer_config.json's class; Marian, M2M100 and Speech2Text are theirs with sentencepiece
# installed: without it transformers cannot load them either), and the model types it overrides a Hub
# tokenizer_class for (MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS)
_MODEL_TYPE_TOKENIZERS = {
    **dict.fromkeys(("EvollaModel", "arctic", "aria", "beam", "bigbird_pegasus", "canary", "chatlm", "cohere_asr",
                    "ernie4_5", "ernie4_5_moe", "flex_olmo", "fuyu", "glm", "glm4", "glm4_moe", "glm4_moe_lite",
                    "glm4v", "glm4v_moe", "glm_image", "glmasr", "got_ocr2", "gpt_bigcode", "gradium_phonon_tts",
                    "granite", "granitemoe", "granitemoehybrid", "granitemoeshared", "h2ovl_chat", "hyperclovax",
                    "hyperclovax_vlm", "internlm2", "internlm3", "iquestcoder", "jamba", "kimi_k25", "kimi_linear",
                    "kosmos-2", "llava", "llava_next", "mimo_v2_flash", "minicpm3", "minicpm_ocr", "minicpmv",
                    "minicpmv4_6", "minicpmv4_7", "minimax_m2", "ministral", "ministral3", "mistral", "mistral3",
                    "mistral_large4", "mixtral", "modernbert", "modernbert-decoder", "molmo", "molmo2",
                    "nemo_speechlm", "nemotron", "nvfp4", "nystromformer", "olmo2", "olmo3", "olmo_hybrid", "omniasr",
                    "opencua", "openvla", "paddleocr_vl", "pegasus_x", "persimmon", "phi3", "phi3_v", "phimoe",
                    "pix2struct", "pixtral", "pocket_tts", "smolvlm", "stablelm", "step3_vl", "umt5", "vipllava",
                    "voxtral", "voxtral_realtime", "xlm-roberta-xl"), _GENERIC_CLASS),
    **dict.fromkeys(("albert", "yoso"), "AlbertTokenizer"),
    "florence2": "BartTokenizer",
    "barthez": "BarthezTokenizer",
    "bartpho": "BartphoTokenizer",
    "bert-japanese": "BertJapaneseTokenizer",
    **dict.fromkeys(("align", "bark", "bert", "blip", "bros", "chinese_clip", "convbert", "distilbert", "electra",
                    "ernie", "flava", "git", "grounding-dino", "layoutlm", "megatron-bert", "mm-grounding-dino",
                    "nezha", "nomic_bert", "qdqbert", "realm", "retribert", "squeezebert", "tvp", "vilt",
                    "visual_bert"), "BertTokenizer"),
    "bertweet": "BertweetTokenizer",
    "big_bird": "BigBirdTokenizer",
    "biogpt": "BioGptTokenizer",
    "blenderbot-small": "BlenderbotSmallTokenizer",
    "blenderbot": "BlenderbotTokenizer",
    "byt5": "ByT5Tokenizer",
    **dict.fromkeys(("aimv2", "clip", "clipseg", "groupvit", "omdet-turbo", "oneformer", "owlv2", "owlvit", "sam3",
                    "sam3_video", "xclip"), "CLIPTokenizer"),
    "ctrl": "CTRLTokenizer",
    "camembert": "CamembertTokenizer",
    "canine": "CanineTokenizer",
    "clvp": "ClvpTokenizer",
    "code_llama": "CodeLlamaTokenizer",
    **dict.fromkeys(("aya_vision", "cohere", "cohere2"), "CohereTokenizer"),
    "cpmant": "CpmAntTokenizer",
    "cpm": "CpmTokenizer",
    "dpr": "DPRQuestionEncoderTokenizer",
    "deberta": "DebertaTokenizer",
    "deberta-v2": "DebertaV2Tokenizer",
    "dia": "DiaTokenizer",
    "ergo": "ErgoTokenizer",
    "esm": "EsmTokenizer",
    **dict.fromkeys(("esmc", "esmfold2"), "EsmcTokenizer"),
    "fnet": "FNetTokenizer",
    "fsmt": "FSMTTokenizer",
    "flaubert": "FlaubertTokenizer",
    "funnel": "FunnelTokenizer",
    **dict.fromkeys(("blip-2", "codegen", "dbrx", "emu3", "gpt2", "gpt_neo", "gptj", "hyperclovax_vision_v2",
                    "instructblip", "instructblipvideo", "jais2", "opt", "phi", "starcoder2"), "GPT2Tokenizer"),
    "gpt_neox_japanese": "GPTNeoXJapaneseTokenizer",
    **dict.fromkeys(("falcon_mamba", "gpt_neox", "mamba", "mamba2", "mpt", "olmo", "olmoe", "rwkv",
                    "xlstm"), "GPTNeoXTokenizer"),
    **dict.fromkeys(("diffusion_gemma", "gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n", "gemma3n_text",
                    "recurrent_gemma", "shieldgemma2", "t5gemma", "zaya"), "GemmaTokenizer"),
    "herbert": "HerbertTokenizer",
    "led": "LEDTokenizer",
    **dict.fromkeys(("lasr_ctc", "lasr_encoder"), "LasrTokenizer"),
    "layoutlmv2": "LayoutLMv2Tokenizer",
    "layoutlmv3": "LayoutLMv3Tokenizer",
    "layoutxlm": "LayoutXLMTokenizer",
    **dict.fromkeys(("idefics", "idefics2"), "LlamaTokenizer"),
    "luke": "LukeTokenizer",
    "lxmert": "LxmertTokenizer",
    "m2m_100": "M2M100Tokenizer",
    "mbart50": "MBart50Tokenizer",
    "mbart": "MBartTokenizer",
    "mpnet": "MPNetTokenizer",
    "marian": "MarianTokenizer",
    "markuplm": "MarkupLMTokenizer",
    "mgp-str": "MgpstrTokenizer",
    "mobilebert": "MobileBertTokenizer",
    "mvp": "MvpTokenizer",
    "myt5": "MyT5Tokenizer",
    **dict.fromkeys(("nllb", "nllb-moe"), "NllbTokenizer"),
    **dict.fromkeys(("nougat", "pp_formulanet"), "NougatTokenizer"),
    "openai-gpt": "OpenAIGPTTokenizer",
    "plbart": "PLBartTokenizer",
    **dict.fromkeys(("granite_speech5_ctc", "nemotron3_5_asr", "nemotron_asr_streaming", "omniasr_ctc", "parakeet_ctc",
                    "parakeet_rnnt", "parakeet_tdt"), "ParakeetTokenizer"),
    "pegasus": "PegasusTokenizer",
    "perceiver": "PerceiverTokenizer",
    "phobert": "PhobertTokenizer",
    "prophetnet": "ProphetNetTokenizer",
    **dict.fromkeys(("audioflamingo3", "colqwen2", "cosmos3_omni", "dots3_note", "fun_asr_nano", "hunyuan_vl",
                    "internvl", "lighton_ocr", "llava_onevision1_5", "moss_transcribe_diarize", "ovis2", "qianfan_ocr",
                    "qwen2", "qwen2_5_omni", "qwen2_5_vl", "qwen2_audio", "qwen2_moe", "qwen2_vl", "qwen3",
                    "qwen3_asr", "qwen3_moe", "qwen3_next", "qwen3_omni_moe", "qwen3_vl", "qwen3_vl_moe",
                    "vibevoice"), "Qwen2Tokenizer"),
    **dict.fromkeys(("qwen3_5", "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_5_text", "qwen4_exp"), "Qwen3_5Tokenizer"),
    "rag": "RagTokenizer",
    "reformer": "ReformerTokenizer",
    "rembert": "RemBertTokenizer",
    "roc_bert": "RoCBertTokenizer",
    "roformer": "RoFormerTokenizer",
    **dict.fromkeys(("bart", "bridgetower", "clap", "data2vec-text", "ibert", "lilt", "longformer", "mega", "mra",
                    "roberta", "roberta-prelayernorm"), "RobertaTokenizer"),
    **dict.fromkeys(("seamless_m4t", "seamless_m4t_v2"), "SeamlessM4TTokenizer"),
    "siglip2": "Siglip2Tokenizer",
    "speech_to_text": "Speech2TextTokenizer",
    "splinter": "SplinterTokenizer",
    **dict.fromkeys(("mt5", "musicgen", "musicgen_melody", "switch_transformers", "t5"), "T5Tokenizer"),
    "tapas": "TapasTokenizer",
    "udop": "UdopTokenizer",
    "videoprism": "VideoPrismTokenizer",
    "vits": "VitsTokenizer",
    **dict.fromkeys(("data2vec-audio", "hubert", "unispeech", "unispeech-sat", "wav2vec2", "wav2vec2-bert",
                    "wav2vec2-conformer"), "Wav2Vec2CTCTokenizer"),
    "wav2vec2_phoneme": "Wav2Vec2PhonemeCTCTokenizer",
    "whisper": "WhisperTokenizer",
    "xglm": "XGLMTokenizer",
    **dict.fromkeys(("gte", "jina_embeddings_v3", "metaclip_2", "trocr", "xlm-roberta", "xmod"), "XLMRobertaTokenizer"),
    "xlm": "XLMTokenizer",
    "xlnet": "XLNetTokenizer",
}
# the model types of that table without a config class in transformers 5.25 (CONFIG_MAPPING_NAMES): a folder that
# names no tokenizer class gets the generic one there, the table deciding only over a class the folder names
_MODEL_TYPES_WITHOUT_CONFIG = frozenset({
    "arctic", "barthez", "bartpho", "bert-japanese", "bertweet", "byt5", "chatlm", "code_llama", "cpm", "h2ovl_chat",
    "herbert", "hyperclovax_vlm", "internlm2", "mbart50", "mega", "minicpmv", "molmo", "myt5", "nezha", "nllb",
    "nvfp4", "opencua", "openvla", "phi3_v", "phobert", "qdqbert", "realm", "retribert", "step3_vl",
    "wav2vec2_phoneme"})
_MODEL_TYPES_WITH_WRONG_HUB_CLASS = frozenset({"phi3", "phimoe", "qwen2", "qwen3_5", "internlm2"})


# --- transformers 5's tokenizer classes that rebuild the pipeline --------------------------------------------
# transformers 5 does not run a tokenizer.json as written for these classes: each one's __init__ keeps the file's
# vocabulary and merges (and its post-processor and added tokens), builds its own BPE, normalizer, pre-tokenizer
# and decoder, and adds its default special tokens. So a Llama file's "<s>user: hi" is "<s>", "user", ... there (no
# "▁" after a special token), where the file's own normalizer (Prepend("▁")) gives "<s>", "▁", "user"; a Llama file
# under GemmaTokenizer splits at each space. minilora loads a folder as transformers does: _CLASS_RULES is the
# table of those classes, each pipeline function a copy of its class's __init__ (transformers 5.25,
# models/<name>/tokenization_<name>.py). Another class of transformers' is refused (_refuse_class_without_rule);
# PreTrainedTokenizerFast, TokenizersBackend and a name transformers does not know run the file as written, as there.

def _setting(settings, key, default):
    """A class's __init__ argument: tokenizer_config.json's or the caller's value, the default where it is None."""
    return default if settings.get(key) is None else settings[key]


def _sentencepiece_decoder(strip):
    """Llama / CodeLlama / Gemma's decoder: "▁" back to spaces, byte tokens to bytes, joined; ``strip`` takes the
    space the prefix added off the text's start."""
    from tokenizers import decoders
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    return decoders.Sequence(steps + ([decoders.Strip(content=" ", left=1)] if strip else []))


def _llama_pipeline(backend, settings):
    """LlamaTokenizer.__init__: no normalizer; Metaspace "▁" before the text's first piece only ("first"), also
    after a special token (legacy=True: "always"), or never (add_prefix_space=False: _get_prepend_scheme); the
    decoder strips the prefix's space only where one is added."""
    from tokenizers import pre_tokenizers
    add_prefix_space = _setting(settings, "add_prefix_space", True)
    scheme = ("always" if settings.get("legacy") else "first") if add_prefix_space else "never"
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
    backend.decoder = _sentencepiece_decoder(strip=add_prefix_space)


def _code_llama_pipeline(backend, settings):
    """CodeLlamaTokenizer.__init__: Llama's, without ``legacy`` ("first" or "never"), always stripping on decode."""
    from tokenizers import pre_tokenizers
    scheme = "first" if _setting(settings, "add_prefix_space", True) else "never"
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
    backend.decoder = _sentencepiece_decoder(strip=True)


def _gemma_pipeline(backend, settings):
    """GemmaTokenizer.__init__: spaces become "▁" (no prefix), the text is split after each space, and the
    decoder strips nothing."""
    from tokenizers import normalizers, pre_tokenizers
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    backend.decoder = _sentencepiece_decoder(strip=False)


def _siglip2_pipeline(backend, settings):
    """Siglip2Tokenizer.__init__: Gemma's, lower-cased first."""
    from tokenizers import normalizers
    _gemma_pipeline(backend, settings)
    backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), backend.normalizer])


def _cohere_pipeline(backend, settings):
    """CohereTokenizer.__init__: NFC, each digit its own piece, then byte-level (add_prefix_space default False)."""
    from tokenizers import decoders, normalizers, pre_tokenizers
    add_prefix_space = _setting(settings, "add_prefix_space", False)
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, trim_offsets=True)])
    backend.decoder = decoders.ByteLevel(add_prefix_space=add_prefix_space, trim_offsets=True)


# Qwen2Tokenizer's and Qwen3_5Tokenizer's PRETOKENIZE_REGEX (Qwen 3.5's words also take combining marks)
_QWEN2_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
_QWEN3_5_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"""
                  r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")


def _qwen_pipeline(pattern):
    """Qwen2Tokenizer.__init__ (Qwen 2, 2.5, 3) and Qwen3_5Tokenizer's: NFC, the class's regex split, byte-level."""
    def pipeline(backend, settings):
        from tokenizers import Regex, decoders, normalizers, pre_tokenizers
        backend.decoder = decoders.ByteLevel()
        backend.normalizer = normalizers.NFC()
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=_setting(settings, "add_prefix_space", False), use_regex=False)])
    return pipeline


def _gpt2_pipeline(backend, settings):
    """GPT2Tokenizer.__init__ (SmolLM, Phi-2, StarCoder 2 folders): byte-level with GPT-2's regex, no normalizer."""
    from tokenizers import decoders, pre_tokenizers
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=_setting(settings, "add_prefix_space", False))
    backend.decoder = decoders.ByteLevel()


def _blenderbot_pipeline(backend, settings):
    """BlenderbotTokenizer.__init__: GPT-2's, with a prefix space unless add_prefix_space=False."""
    _gpt2_pipeline(backend, {**settings, "add_prefix_space": _setting(settings, "add_prefix_space", True)})


def _nougat_pipeline(backend, settings):
    """NougatTokenizer.__init__: NFKC; its page separator dropped, each digit alone, brackets and runs of one
    punctuation mark apart, newlines apart, then byte-level."""
    from tokenizers import decoders, normalizers, pre_tokenizers
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern="SPL1T-TH1S-Pl3A5E", behavior="removed", invert=False),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Split(pattern=r"[\(\)\[\]\{\}]|([!\"#\$%\&'\*\+,\-\./:;<=>\?\\\^_`\|\~])\1*",
                             behavior="isolated", invert=False),
        pre_tokenizers.Split(pattern="\n", behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    backend.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)


def _codegen_pipeline(backend, settings):
    """CodeGenTokenizer.__init__: GPT-2's, and a byte-level post-processor where the file has none."""
    from tokenizers import processors
    _gpt2_pipeline(backend, settings)
    if backend.post_processor is None:
        backend.post_processor = processors.ByteLevel(add_prefix_space=True, use_regex=True, trim_offsets=False)


def _gpt_neox_pipeline(backend, settings):
    """GPTNeoXTokenizer.__init__ (Pythia, OLMo 1): NFC then byte-level; it rebuilds the post-processor too."""
    from tokenizers import decoders, normalizers, pre_tokenizers
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=_setting(settings, "add_prefix_space", False),
                                                     trim_offsets=_setting(settings, "trim_offsets", True))
    backend.decoder = decoders.ByteLevel()


def _precompiled_normalizer(backend):
    """The file's SentencePiece ``Precompiled`` normalizer (alone or in its top-level Sequence), the only part of a
    file's normalizer the SentencePiece classes keep (convert_to_native_format's _spm_precompiled_charsmap)."""
    import base64
    from tokenizers import normalizers
    spec = json.loads(backend.normalizer.__getstate__()) if backend.normalizer is not None else {}
    for step in spec.get("normalizers") or [spec] if spec.get("type") == "Sequence" or spec else []:
        if step.get("type") == "Precompiled" and "precompiled_charsmap" in step:
            return normalizers.Precompiled(base64.b64decode(step["precompiled_charsmap"]))
    return None


def _metaspace_words(backend, scheme):
    """T5 / XLM-RoBERTa's pipeline: the file's precompiled charsmap only, the text split at whitespace, "▁" before
    each word (``scheme`` "always", or "never"), and the decoder that takes them back."""
    from tokenizers import decoders, pre_tokenizers
    backend.normalizer = _precompiled_normalizer(backend)
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)])
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)


def _t5_pipeline(backend, settings):
    """T5Tokenizer.__init__ (T5, mT5, Flan-T5): a "▁" before every word."""
    _metaspace_words(backend, "always")


def _xlm_roberta_pipeline(backend, settings):
    """XLMRobertaTokenizer.__init__: T5's, without the "▁" where add_prefix_space=False."""
    _metaspace_words(backend, "always" if _setting(settings, "add_prefix_space", True) else "never")


def _albert_pipeline(backend, settings):
    """AlbertTokenizer.__init__: `` and '' become ", accents stripped (NFKD) unless keep_accents, lower case
    where do_lower_case (both tokenizer_config.json's), then the charsmap; T5's split (add_prefix_space). Its own
    post-processor is set before the file's replaces it: the file's stays."""
    from tokenizers import normalizers
    charsmap = _precompiled_normalizer(backend)
    _metaspace_words(backend, "always" if _setting(settings, "add_prefix_space", True) else "never")
    steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    if not _setting(settings, "keep_accents", False):
        steps += [normalizers.NFKD(), normalizers.StripAccents()]
    if _setting(settings, "do_lower_case", True):
        steps.append(normalizers.Lowercase())
    backend.normalizer = normalizers.Sequence(steps + ([charsmap] if charsmap else []))


def _deberta_v2_pipeline(backend, settings):
    """DebertaV2Tokenizer.__init__ (DeBERTa v2 / v3): lower case where do_lower_case; with the file's charsmap,
    trailing spaces stripped and runs of spaces one, else whitespace runs / newlines / tabs one space, NFC and
    trailing spaces stripped; punctuation split off where split_by_punct; "▁" before each word (add_prefix_space)
    or the first only."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    charsmap = _precompiled_normalizer(backend)
    steps = [normalizers.Lowercase()] if _setting(settings, "do_lower_case", False) else []
    if charsmap is not None:
        steps += [charsmap, normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(r" {2,}"), " ")]
    else:
        steps += [normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(),
                  normalizers.Strip(left=False, right=True)]
    backend.normalizer = normalizers.Sequence(steps)
    scheme = "always" if _setting(settings, "add_prefix_space", True) else "first"
    split = [pre_tokenizers.Punctuation(behavior="isolated")] if _setting(settings, "split_by_punct", False) else []
    backend.pre_tokenizer = pre_tokenizers.Sequence(split + [pre_tokenizers.Metaspace(replacement="▁",
                                                                                      prepend_scheme=scheme)])
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)


def _bert_pipeline(backend, settings):
    """BertTokenizer.__init__ (BERT, DistilBERT, ELECTRA): the normalizer is tokenizer_config.json's
    do_lower_case / strip_accents / tokenize_chinese_chars (not the file's), words split at spaces and punctuation."""
    from tokenizers import decoders, normalizers, pre_tokenizers
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=_setting(settings, "tokenize_chinese_chars", True),
        strip_accents=settings.get("strip_accents"), lowercase=_setting(settings, "do_lower_case", True))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")


def _xlnet_pipeline(backend, settings):
    """XLNetTokenizer.__init__: `` and '' become ", accents always stripped (NFKD; its keep_accents test is commented
    out), lower case where do_lower_case, then the charsmap; T5's split with a "▁" before each word."""
    from tokenizers import normalizers
    charsmap = _precompiled_normalizer(backend)
    _metaspace_words(backend, "always")
    steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"'), normalizers.NFKD(),
             normalizers.StripAccents()]
    if _setting(settings, "do_lower_case", False):
        steps.append(normalizers.Lowercase())
    backend.normalizer = normalizers.Sequence(steps + ([charsmap] if charsmap else []))


def _pegasus_pipeline(backend, settings):
    """PegasusTokenizer.__init__: the charsmap (else newlines become spaces), runs of spaces one space, "▁" before
    each space-separated piece."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    charsmap = _precompiled_normalizer(backend)
    first = charsmap if charsmap is not None else normalizers.Replace(Regex(r"\n"), " ")
    backend.normalizer = normalizers.Sequence([first, normalizers.Replace(Regex(r" {2,}"), " ")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)


def _big_bird_pipeline(backend, settings):
    """BigBirdTokenizer.__init__: trailing spaces dropped, runs of spaces one "▁", "▁" before each space-separated
    piece (add_prefix_space) or none; no charsmap."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    backend.normalizer = normalizers.Sequence([normalizers.Replace(Regex(r" +\z"), ""),
                                               normalizers.Replace(Regex(r" {2,}"), "▁")])
    scheme = "always" if _setting(settings, "add_prefix_space", True) else "never"
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=True)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme, split=True)


_CLIP_REGEX = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _clip_pipeline(backend, settings):
    """CLIPTokenizer.__init__: NFC, whitespace runs one space, lower case; words by CLIP's regex (the rest, spaces
    included, dropped), then byte-level."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    backend.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                               normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CLIP_REGEX), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    backend.decoder = decoders.ByteLevel()


def _openai_gpt_pipeline(backend, settings):
    """OpenAIGPTTokenizer.__init__ (GPT-1): BERT's lower-casing normalizer and word split, "</w>" word ends."""
    from tokenizers import decoders, normalizers, pre_tokenizers
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.BPEDecoder(suffix="</w>")


def _xglm_pipeline(backend, settings):
    """XGLMTokenizer.__init__: the charsmap, runs of spaces one space, "▁" before each word (add_prefix_space)."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    charsmap = _precompiled_normalizer(backend)
    backend.normalizer = normalizers.Sequence(([charsmap] if charsmap else []) +
                                              [normalizers.Replace(Regex(r" {2,}"), " ")])
    scheme = "always" if _setting(settings, "add_prefix_space", True) else "never"
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)


def _rembert_pipeline(backend, settings):
    """RemBertTokenizer.__init__: `` and '' become ", runs of spaces one space, accents stripped unless keep_accents
    (kept by default), lower case where do_lower_case, the charsmap; "▁" before each word (add_prefix_space)."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    charsmap = _precompiled_normalizer(backend)
    steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"'), normalizers.Replace(Regex(" {2,}"), " ")]
    if not _setting(settings, "keep_accents", True):
        steps += [normalizers.NFKD(), normalizers.StripAccents()]
    if _setting(settings, "do_lower_case", False):
        steps.append(normalizers.Lowercase())
    backend.normalizer = normalizers.Sequence(steps + ([charsmap] if charsmap else []))
    scheme = "always" if _setting(settings, "add_prefix_space", True) else "never"
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)


def _herbert_pipeline(backend, settings):
    """HerbertTokenizer.__init__: BERT's normalizer keeping case and accents, BERT's word split, "</w>" word ends."""
    from tokenizers import decoders, normalizers, pre_tokenizers
    backend.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False, clean_text=True,
                                                    handle_chinese_chars=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.BPEDecoder(suffix="</w>")


def _reformer_pipeline(backend, settings):
    """ReformerTokenizer.__init__: the charsmap and runs of spaces one space (no normalizer without a charsmap), "▁"
    before each space-separated piece."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    charsmap = _precompiled_normalizer(backend)
    backend.normalizer = charsmap and normalizers.Sequence([charsmap, normalizers.Replace(Regex(" {2,}"), " ")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")


def _barthez_pipeline(backend, settings):
    """BarthezTokenizer.__init__: with the charsmap, trailing spaces stripped and runs of spaces one "▁"; else
    whitespace runs / newlines / tabs one space, NFC, trailing spaces stripped; "▁" before each word
    (add_prefix_space)."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    charsmap = _precompiled_normalizer(backend)
    if charsmap is not None:
        steps = [charsmap, normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(r" {2,}"), "▁")]
    else:
        steps = [normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(),
                 normalizers.Strip(left=False, right=True)]
    backend.normalizer = normalizers.Sequence(steps)
    scheme = "always" if _setting(settings, "add_prefix_space", True) else "never"
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)


def _dpr_pipeline(backend, settings):
    """DPRContextEncoderTokenizer / DPRQuestionEncoderTokenizer.__init__: BERT's, its do_lower_case kept from
    BertTokenizer (which lower-cases whatever the folder says)."""
    _bert_pipeline(backend, {**settings, "do_lower_case": None})


def _t5_sentinels(config):
    """T5Tokenizer.__init__'s sentinels: ``<extra_id_0>`` .. ``<extra_id_{extra_ids - 1}>`` (100 by default) as
    extra special tokens, after tokenizer_config.json's additional_special_tokens unless those hold them."""
    extra_ids = _setting(config, "extra_ids", 100)
    given = [_token_text(token) for token in config.get("additional_special_tokens") or ()]
    sentinels = [token for token in given if "<extra_id_" in token]
    if not sentinels:
        return [f"<extra_id_{i}>" for i in range(extra_ids)]
    if extra_ids > 0 and extra_ids != len(sentinels):  # transformers' ValueError
        raise ValueError(f"Both extra_ids ({extra_ids}) and additional_special_tokens ({given}) are provided to "
                         "T5Tokenizer. In this case the additional_special_tokens must include the extra_ids tokens")
    return []


def _camembert_unused(config):
    """CamembertTokenizer.__init__'s extra special tokens where tokenizer_config.json lists none."""
    return [] if config.get("additional_special_tokens") is not None else ["<s>NOTUSED", "</s>NOTUSED", "<unk>NOTUSED"]


def _template(single, pair, tokenizer, tokens):
    from tokenizers import processors
    return processors.TemplateProcessing(single=single, pair=pair,
                                         special_tokens=[(token, tokenizer._token_id(token)) for token in tokens])


def _t5_post_processor(tokenizer):
    """T5: "$A </s>", pairs "$A </s> $B </s>" (the text "</s>" with the eos token's id)."""
    from tokenizers import processors
    return processors.TemplateProcessing(single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"],
                                         special_tokens=[("</s>", tokenizer.eos_token_id)])


def _xlm_roberta_post_processor(tokenizer):
    """XLM-RoBERTa: "<s> $A </s>", pairs "<s> $A </s> </s> $B </s>" (all type id 0)."""
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    return _template([bos, "$A", eos], [bos, "$A", eos, eos, "$B", eos], tokenizer, [bos, eos])


def _roberta_post_processor(tokenizer):
    """RoBERTa (BART, Longformer): "<s> $A </s>", pairs "<s> $A </s> </s> $B </s>", the offsets trimmed of their
    spaces (trim_offsets, add_prefix_space: tokenizer_config.json's)."""
    from tokenizers import processors
    settings = tokenizer._saved_settings or {}
    return processors.RobertaProcessing((tokenizer.sep_token, tokenizer.sep_token_id),
                                        (tokenizer.cls_token, tokenizer.cls_token_id),
                                        trim_offsets=_setting(settings, "trim_offsets", True),
                                        add_prefix_space=_setting(settings, "add_prefix_space", False))


def _albert_post_processor(tokenizer):
    """ALBERT: "[CLS] $A [SEP]", pairs "[CLS] $A [SEP] $B [SEP]" (type id 1), with the vocabulary ids of its
    cls / sep tokens."""
    from tokenizers import processors
    vocab = tokenizer.tokenizer.get_vocab(with_added_tokens=False)
    return processors.TemplateProcessing(single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
                                         special_tokens=[("[CLS]", vocab.get(tokenizer.cls_token)),
                                                         ("[SEP]", vocab.get(tokenizer.sep_token))])


def _cls_sep_template(tokenizer, cls_fallback, sep_fallback):
    """BERT / DeBERTa v2: "[CLS] $A [SEP]", pairs "[CLS] $A [SEP] $B [SEP]" with the second text's type id 1 (a
    token without an id gets the class's fallback)."""
    from tokenizers import processors
    cls, sep = tokenizer.cls_token, tokenizer.sep_token
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    return processors.TemplateProcessing(single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
                                         special_tokens=[(cls, cls_fallback if cls_id is None else cls_id),
                                                         (sep, sep_fallback if sep_id is None else sep_id)])


def _bert_post_processor(tokenizer):
    return _cls_sep_template(tokenizer, 2, 3)


def _deberta_v2_post_processor(tokenizer):
    return _cls_sep_template(tokenizer, 0, 0)


def _xlnet_post_processor(tokenizer):
    """XLNet: the special tokens at the end, "$A <sep> <cls>", pairs "$A <sep> $B <sep> <cls>" (<cls>'s type id 2)."""
    sep, cls = tokenizer.sep_token, tokenizer.cls_token
    return _template(f"$A:0 {sep}:0 {cls}:2", f"$A:0 {sep}:0 $B:1 {sep}:1 {cls}:2", tokenizer, [sep, cls])


def _pegasus_post_processor(tokenizer):
    """Pegasus: "$A </s>", pairs "$A $B </s>"."""
    eos = tokenizer.eos_token
    return _template(f"$A {eos}", f"$A $B {eos}", tokenizer, [eos])


def _funnel_post_processor(tokenizer):
    """Funnel: BERT's template with <cls>'s type id 2."""
    cls, sep = tokenizer.cls_token, tokenizer.sep_token
    return _template(f"{cls}:2 $A:0 {sep}:0", f"{cls}:2 $A:0 {sep}:0 $B:1 {sep}:1", tokenizer, [cls, sep])


def _mpnet_post_processor(tokenizer):
    """MPNet: RoBERTa's "<s> $A </s>", pairs "<s> $A </s> </s> $B </s>", offsets trimmed, no prefix space (fixed,
    whatever the folder says); a token without an id gets the class's fallback (cls 0, sep 2)."""
    from tokenizers import processors
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    return processors.RobertaProcessing((tokenizer.sep_token, 2 if sep_id is None else sep_id),
                                        (tokenizer.cls_token, 0 if cls_id is None else cls_id), True, False)


def _big_bird_post_processor(tokenizer):
    """BigBird, RemBERT: BERT's "[CLS] $A [SEP]", pairs with the second text's type id 1."""
    cls, sep = tokenizer.cls_token, tokenizer.sep_token
    return _template(f"{cls}:0 $A:0 {sep}:0", f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1", tokenizer, [cls, sep])


def _deberta_post_processor(tokenizer):
    """DeBERTa (v1): "[CLS] $A [SEP]", pairs "[CLS] $A [SEP] [SEP] $B [SEP]", every type id 0."""
    cls, sep = tokenizer.cls_token, tokenizer.sep_token
    return _template(f"{cls} $A {sep}", f"{cls} $A {sep} {sep} $B {sep}", tokenizer, [cls, sep])


def _clip_post_processor(tokenizer):
    """CLIP: "<|startoftext|> $A <|endoftext|>" (RoBERTa's processor, offsets untrimmed)."""
    from tokenizers import processors
    return processors.RobertaProcessing((tokenizer.eos_token, tokenizer.eos_token_id),
                                        (tokenizer.bos_token, tokenizer.bos_token_id), False, False)


def _xglm_post_processor(tokenizer):
    """XGLM: "</s> $A", pairs "</s> $A </s> </s> $B"."""
    eos = tokenizer.eos_token
    return _template(f"{eos} $A", f"{eos} $A {eos} {eos} $B", tokenizer, [tokenizer.bos_token, eos])


def _herbert_post_processor(tokenizer):
    """HerBERT: BERT's processor with fixed ids, <s> 0 and </s> 2."""
    from tokenizers import processors
    return processors.BertProcessing((tokenizer.sep_token, 2), (tokenizer.cls_token, 0))


def _splinter_post_processor(tokenizer):
    """Splinter: BERT's template, pairs with the question token and "." before the first [SEP] (after the second
    text where padding_side is left, as at load)."""
    cls, sep, question = tokenizer.cls_token, tokenizer.sep_token, tokenizer.question_token
    middle, end = ([question, ".", f"{sep}:0"], [f"{sep}:1"]) if tokenizer.padding_side == "right" else \
        ([f"{sep}:0"], [question, ".", f"{sep}:1"])
    return _template(f"{cls}:0 $A:0 {sep}:0", " ".join([f"{cls}:0", "$A:0", *middle, "$B:1", *end]), tokenizer,
                     [cls, sep, question, "."])


def _nougat_post_processor(tokenizer):
    """Nougat: "<s> $A </s>", pairs "$A $B" without special tokens; its __init__ also leaves the backend cutting
    and padding to 4096 (a call's own options replace both, as there)."""
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    tokenizer.tokenizer.enable_truncation(max_length=4096)
    tokenizer.tokenizer.enable_padding(length=4096, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    return _template(f"{bos}:0 $A:0 {eos}:0", "$A:0 $B:1", tokenizer, [eos, bos])


def _xlnet_extra(config):
    """XLNetTokenizer.__init__'s extra special tokens where tokenizer_config.json lists none."""
    return [] if config.get("additional_special_tokens") is not None else ["<eop>", "<eod>"]


def _pegasus_extra(config):
    """PegasusTokenizer.__init__'s: its sentence mask token (unless tokenizer_config.json's list has it) and the
    pretraining placeholders <unk_2> .. <unk_{offset - 1}>."""
    sent = _setting(config, "mask_token_sent", "<mask_1>")
    given = [_token_text(token) for token in config.get("additional_special_tokens") or ()]
    head = [sent] if sent is not None and sent not in given else []
    return head + [f"<unk_{i}>" for i in range(2, _setting(config, "offset", 103))]

_MBART_LANGUAGES = tuple("""
ar_AR cs_CZ de_DE en_XX es_XX et_EE fi_FI fr_XX gu_IN hi_IN it_IT ja_XX kk_KZ ko_KR lt_LT lv_LV my_MM ne_NP
nl_XX ro_RO ru_RU si_LK tr_TR vi_VN zh_CN
""".split())
_NLLB_LANGUAGES = tuple("""
ace_Arab ace_Latn acm_Arab acq_Arab aeb_Arab afr_Latn ajp_Arab aka_Latn amh_Ethi apc_Arab arb_Arab ars_Arab
ary_Arab arz_Arab asm_Beng ast_Latn awa_Deva ayr_Latn azb_Arab azj_Latn bak_Cyrl bam_Latn ban_Latn bel_Cyrl
bem_Latn ben_Beng bho_Deva bjn_Arab bjn_Latn bod_Tibt bos_Latn bug_Latn bul_Cyrl cat_Latn ceb_Latn ces_Latn
cjk_Latn ckb_Arab crh_Latn cym_Latn dan_Latn deu_Latn dik_Latn dyu_Latn dzo_Tibt ell_Grek eng_Latn epo_Latn
est_Latn eus_Latn ewe_Latn fao_Latn pes_Arab fij_Latn fin_Latn fon_Latn fra_Latn fur_Latn fuv_Latn gla_Latn
gle_Latn glg_Latn grn_Latn guj_Gujr hat_Latn hau_Latn heb_Hebr hin_Deva hne_Deva hrv_Latn hun_Latn hye_Armn
ibo_Latn ilo_Latn ind_Latn isl_Latn ita_Latn jav_Latn jpn_Jpan kab_Latn kac_Latn kam_Latn kan_Knda kas_Arab
kas_Deva kat_Geor knc_Arab knc_Latn kaz_Cyrl kbp_Latn kea_Latn khm_Khmr kik_Latn kin_Latn kir_Cyrl kmb_Latn
kon_Latn kor_Hang kmr_Latn lao_Laoo lvs_Latn lij_Latn lim_Latn lin_Latn lit_Latn lmo_Latn ltg_Latn ltz_Latn
lua_Latn lug_Latn luo_Latn lus_Latn mag_Deva mai_Deva mal_Mlym mar_Deva min_Latn mkd_Cyrl plt_Latn mlt_Latn
mni_Beng khk_Cyrl mos_Latn mri_Latn zsm_Latn mya_Mymr nld_Latn nno_Latn nob_Latn npi_Deva nso_Latn nus_Latn
nya_Latn oci_Latn gaz_Latn ory_Orya pag_Latn pan_Guru pap_Latn pol_Latn por_Latn prs_Arab pbt_Arab quy_Latn
ron_Latn run_Latn rus_Cyrl sag_Latn san_Deva sat_Beng scn_Latn shn_Mymr sin_Sinh slk_Latn slv_Latn smo_Latn
sna_Latn snd_Arab som_Latn sot_Latn spa_Latn als_Latn srd_Latn srp_Cyrl ssw_Latn sun_Latn swe_Latn swh_Latn
szl_Latn tam_Taml tat_Cyrl tel_Telu tgk_Cyrl tgl_Latn tha_Thai tir_Ethi taq_Latn taq_Tfng tpi_Latn tsn_Latn
tso_Latn tuk_Latn tum_Latn tur_Latn twi_Latn tzm_Tfng uig_Arab ukr_Cyrl umb_Latn urd_Arab uzn_Latn vec_Latn
vie_Latn war_Latn wol_Latn xho_Latn ydd_Hebr yor_Latn yue_Hant zho_Hans zho_Hant zul_Latn
""".split())


def _languages(codes, config_key):
    """mBART / NLLB's extra special tokens: the language codes, and tokenizer_config.json's ``config_key`` list
    (mBART's after the codes; NLLB's list instead of them)."""
    def extra(settings):
        given = [_token_text(token) for token in settings.get(config_key) or ()]
        if config_key == "extra_special_tokens":
            return given or [_token_text(t) for t in settings.get("additional_special_tokens") or ()] or list(codes)
        return list(dict.fromkeys(list(codes) + given))
    return extra


_MBART50_LANGUAGES = _MBART_LANGUAGES + tuple("""
af_ZA az_AZ bn_IN fa_IR he_IL hr_HR id_ID ka_GE km_KH mk_MK ml_IN mn_MN mr_IN pl_PL ps_AF pt_XX sv_SE sw_KE ta_IN
te_IN th_TH tl_XX uk_UA ur_PK xh_ZA gl_ES sl_SI
""".split())


def _mbart50_vocab(vocab, chosen):
    """MBart50Tokenizer.__init__'s vocabulary: the file's where it holds a language code (a converted mBART-50 file
    does); else fairseq's <s> <pad> </s> <unk>, the file's pieces from its fourth on, the codes and the mask."""
    if any(piece in _MBART50_LANGUAGES for piece, _ in vocab):
        return vocab
    head = [[chosen[kind], 0.0] for kind in ("cls", "pad", "eos", "unk")]
    return head + vocab[3:] + [[code, 0.0] for code in _MBART50_LANGUAGES] + [[chosen["mask"], 0.0]]


def _mbart50_pipeline(backend, settings):
    """MBart50Tokenizer.__init__: the charsmap, trailing spaces stripped, runs of spaces one space, "▁" before each
    space-separated piece."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    charsmap = _precompiled_normalizer(backend)
    steps = [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(r" {2,}"), " ")]
    backend.normalizer = normalizers.Sequence(([charsmap] if charsmap else []) + steps)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)


def _mbart_pipeline(backend, settings):
    """MBartTokenizer.__init__: the charsmap, trailing spaces stripped, runs of spaces one "▁", then T5's split."""
    from tokenizers import Regex, normalizers
    steps = [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "▁")]
    charsmap = _precompiled_normalizer(backend)
    _metaspace_words(backend, "always")
    backend.normalizer = normalizers.Sequence(([charsmap] if charsmap else []) + steps)


def _nllb_pipeline(backend, settings):
    """NllbTokenizer.__init__ (a BPE): the charsmap and runs of spaces one space (no normalizer without a charsmap),
    "▁" before each space-separated piece."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    charsmap = _precompiled_normalizer(backend)
    backend.normalizer = charsmap and normalizers.Sequence([charsmap, normalizers.Replace(Regex(" {2,}"), " ")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)


def _source_language_template(tokenizer):
    return tokenizer._language_template(tokenizer.src_lang)


def _whisper_prefix_template(tokenizer):
    tokenizer.set_prefix_tokens()
    return tokenizer.tokenizer.post_processor


class CodeLlamaTokenizer(HFTokenizer):
    """transformers' CodeLlamaTokenizer (models/code_llama/tokenization_code_llama.py): infilling. A text with
    ``<FILL_ME>`` (or ``tok(prefix, suffix=...)``) is encoded as "<s>▁<PRE> {prefix}▁<SUF>{suffix}▁<MID>"
    (``suffix_first=True``: "<s>▁<PRE>▁<SUF>{suffix}▁<MID> {prefix}"), the prefix with one more leading space, the
    normalizer replacing spaces by "▁" meanwhile. As there, the first infilling call leaves the normalizer
    Prepend("▁") + Replace(" ", "▁") for the calls after it (set_infilling_processor(reset=True))."""

    _saved_class = "CodeLlamaTokenizer"  # (loaded back, its infilling and add_bos_token stay)
    fill_token = "<FILL_ME>"
    prefix_token, middle_token, suffix_token, eot_token = "▁<PRE>", "▁<MID>", "▁<SUF>", "▁<EOT>"
    prefix_id = property(lambda self: self._token_id(self.prefix_token))
    middle_id = property(lambda self: self._token_id(self.middle_token))
    suffix_id = property(lambda self: self._token_id(self.suffix_token))
    eot_id = property(lambda self: self._token_id(self.eot_token))

    def __call__(self, text=None, text_pair=None, *, suffix=None, suffix_first=False, **kwargs):
        infilling = suffix is not None
        if infilling:
            text_pair = suffix
        elif isinstance(text, str) and self.fill_token in text and text_pair is None:
            text, text_pair = self._split_on_fill_token(text)
            infilling = True
        if not infilling or not text_pair:  # (an empty suffix: the prefix alone)
            return super().__call__(text, text_pair, **kwargs)
        with self._infilling(suffix_first, kwargs.pop("add_special_tokens", True)):
            return super().__call__(_space_before(text), text_pair, add_special_tokens=True, **kwargs)

    def tokenize(self, text, pair=None, add_special_tokens=False, suffix=None, suffix_first=False):
        """The tokens of ``text``, or of an infilling prompt (special tokens left out unless asked)."""
        if self.fill_token in text and suffix is None:
            text, suffix = self._split_on_fill_token(text)
        if not suffix:
            return super().tokenize(text, pair, add_special_tokens)
        with self._infilling(suffix_first, False):
            return super().tokenize(" " + text, suffix, add_special_tokens)

    def _split_on_fill_token(self, text):
        parts = text.split(self.fill_token)
        if len(parts) != 2:
            raise ValueError(f"an infilling prompt has one {self.fill_token} (between the prefix and the suffix), "
                             f"this text has {len(parts) - 1}")
        return parts

    @contextlib.contextmanager
    def _infilling(self, suffix_first, add_special_tokens):
        """set_infilling_processor(False, ...) for one call, then set_infilling_processor(True)."""
        from tokenizers import normalizers, processors
        bos = [self.bos_token] if self.add_bos_token and add_special_tokens else []
        eos = [self.eos_token] if self.add_eos_token and add_special_tokens else []
        order = ([self.prefix_token, self.suffix_token, "$B", self.middle_token, "$A"] if suffix_first else
                 [self.prefix_token, "$A", self.suffix_token, "$B", self.middle_token])
        special = [(token, self._token_id(token)) for token in bos + [self.prefix_token, self.suffix_token,
                                                                      self.middle_token] + eos]
        self.tokenizer.normalizer = normalizers.Replace(pattern=" ", content="▁")
        self.tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair=bos + order + eos,
                                                                      special_tokens=special)
        try:
            yield
        finally:
            self.tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend(prepend="▁"),
                                                              normalizers.Replace(pattern=" ", content="▁")])
            self._update_post_processor()


def _space_before(text):
    """CodeLlama's infilling prefix (one text or a batch of them) with a space before it."""
    return " " + text if isinstance(text, str) else [" " + t if isinstance(t, str) else t for t in text]


class TranslationTokenizer(HFTokenizer):
    """transformers' MBartTokenizer / NllbTokenizer: the language codes around a text. ``src_lang`` (mBART's
    default en_XX, NLLB's eng_Latn) marks the inputs, ``tgt_lang`` (else ``src_lang``) the ``text_target`` labels:
    mBART's "$A </s> en_XX"; NLLB's "eng_Latn $A </s>" ("$A </s> eng_Latn" with ``legacy_behaviour``). As there,
    each call with a text puts the source template back (a flag set by hand lasts until the next call)."""

    _default_language = "en_XX"
    _legacy_behaviour = True  # the codes after the text (mBART's only way, NLLB's legacy_behaviour=True)

    def _class_init(self, settings):
        self._legacy_behaviour = _setting(settings, "legacy_behaviour", type(self)._legacy_behaviour)
        self.legacy_behaviour = self._legacy_behaviour
        self.tgt_lang = settings.get("tgt_lang")
        self._src_lang = _setting(settings, "src_lang", self._default_language)

    @property
    def src_lang(self):
        return self._src_lang

    @src_lang.setter
    def src_lang(self, language):
        self._src_lang = language
        self.set_src_lang_special_tokens(language)

    @property
    def cur_lang_code(self):
        return self._token_id(self._current_language)

    def set_src_lang_special_tokens(self, language):
        self.tokenizer.post_processor = self._language_template(language)

    def set_tgt_lang_special_tokens(self, language):
        self.tokenizer.post_processor = self._language_template(language)

    def _language_template(self, language):
        from tokenizers import processors
        self._current_language = language
        eos, code = self.eos_token, language
        if self._legacy_behaviour:
            self.prefix_tokens, self.suffix_tokens = [], [self.eos_token_id, self.cur_lang_code]
            single, pair = ["$A", eos, code], ["$A", "$B", eos, code]
        else:
            self.prefix_tokens, self.suffix_tokens = [self.cur_lang_code], [self.eos_token_id]
            single, pair = [code, "$A", eos], [code, "$A", "$B", eos]
        return processors.TemplateProcessing(single=single, pair=pair, special_tokens=[
            (eos, self.eos_token_id), (code, self.cur_lang_code)])

    def _language_config(self):
        return {"src_lang": self.src_lang, "tgt_lang": self.tgt_lang}

    def _switch_to_input_mode(self):
        self.set_src_lang_special_tokens(self.src_lang)

    def _switch_to_target_mode(self):
        if self.tgt_lang is None:
            self.tgt_lang = self._src_lang
        self.set_tgt_lang_special_tokens(self.tgt_lang)


class NllbTokenizer(TranslationTokenizer):
    _default_language = "eng_Latn"
    _legacy_behaviour = False

    def _language_config(self):
        return {**super()._language_config(), "legacy_behaviour": self._legacy_behaviour}


class MBart50Tokenizer(TranslationTokenizer):
    """transformers' MBart50Tokenizer (mBART-50 one-to-many / many-to-many): the source code before the text,
    "en_XX $A </s>"."""
    _legacy_behaviour = False
    cur_lang_code_id = property(lambda self: self.cur_lang_code)
    lang_code_to_id = property(lambda self: {code: self._token_id(code) for code in _MBART50_LANGUAGES})


class MBartTokenizer(TranslationTokenizer):
    """transformers' MBartTokenizer (mBART-cc25, mBART-large-en-ro): the codes after the text."""


# WhisperTokenizer's LANGUAGES (code: name, in the order of the <|en|>, <|zh|>, ... tokens after
# <|startoftranscript|>) and the other names TO_LANGUAGE_CODE takes
_WHISPER_LANGUAGES = dict(pair.replace("_", " ").split(":") for pair in """
en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese pt:portuguese tr:turkish
pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian id:indonesian hi:hindi fi:finnish vi:vietnamese
he:hebrew uk:ukrainian el:greek ms:malay cs:czech ro:romanian da:danish hu:hungarian ta:tamil no:norwegian
th:thai ur:urdu hr:croatian bg:bulgarian lt:lithuanian la:latin mi:maori ml:malayalam cy:welsh sk:slovak
te:telugu fa:persian lv:latvian bn:bengali sr:serbian az:azerbaijani sl:slovenian kn:kannada et:estonian
mk:macedonian br:breton eu:basque is:icelandic hy:armenian ne:nepali mn:mongolian bs:bosnian kk:kazakh
sq:albanian sw:swahili gl:galician mr:marathi pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba so:somali
af:afrikaans oc:occitan ka:georgian be:belarusian tg:tajik sd:sindhi gu:gujarati am:amharic yi:yiddish lo:lao
uz:uzbek fo:faroese ht:haitian_creole ps:pashto tk:turkmen nn:nynorsk mt:maltese sa:sanskrit lb:luxembourgish
my:myanmar bo:tibetan tl:tagalog mg:malagasy as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa ba:bashkir
jw:javanese su:sundanese yue:cantonese
""".split())
_WHISPER_LANGUAGE_ALIASES = dict(pair.split(":") for pair in (
    "burmese:my valencian:ca flemish:nl haitian:ht letzeburgesch:lb pushto:ps panjabi:pa moldavian:ro "
    "moldovan:ro sinhalese:si castilian:es mandarin:zh").split())


class WhisperTokenizer(HFTokenizer):
    """transformers' WhisperTokenizer: a call's ids start with the prefix tokens (``<|startoftranscript|>``, the
    ``language``'s token, the ``task``'s (<|transcribe|> / <|translate|>), ``<|notimestamps|>`` unless
    ``predict_timestamps``) and end with <|endoftext|>, the fine-tuning tutorial's labels; ``set_prefix_tokens``
    changes them. decode drops timestamp tokens' text (<|1.00|>) and, skipping special tokens, a prompt before
    <|startoftranscript|> (a single sequence's, as there)."""

    _timestamp = re.compile(r"<\|(\d+\.\d+)\|>")

    def _class_init(self, settings):
        self.language, self.task = settings.get("language"), settings.get("task")
        self.predict_timestamps = _setting(settings, "predict_timestamps", False)

    def _language_config(self):
        return {"language": self.language, "task": self.task, "predict_timestamps": self.predict_timestamps}

    @property
    def prefix_tokens(self):
        start = self.convert_tokens_to_ids("<|startoftranscript|>")  # (a token missing: the unk id, as there)
        prefix = [start]
        if self.language is not None:
            self.language = self.language.lower()
            code = {**{name: code for code, name in _WHISPER_LANGUAGES.items()},
                    **_WHISPER_LANGUAGE_ALIASES}.get(self.language, self.language)
            if code not in _WHISPER_LANGUAGES:  # transformers' message
                names = list(_WHISPER_LANGUAGES) if len(self.language) == 2 else \
                    list(_WHISPER_LANGUAGES.values()) + list(_WHISPER_LANGUAGE_ALIASES)
                raise ValueError(f"Unsupported language: {self.language}. Language should be one of: {names}.")
            prefix.append(start + 1 + list(_WHISPER_LANGUAGES).index(code))
        if self.task is not None:
            if self.task not in ("translate", "transcribe"):
                raise ValueError(f"Unsupported task: {self.task}. Task should be in: ['translate', 'transcribe']")
            prefix.append(self.convert_tokens_to_ids(f"<|{self.task}|>"))
        if not self.predict_timestamps:
            prefix.append(self.convert_tokens_to_ids("<|notimestamps|>"))
        return prefix

    def set_prefix_tokens(self, language=None, task=None, predict_timestamps=None):
        """Change the language / task / predict_timestamps the prefix says (None: keep it)."""
        from tokenizers import processors
        self.language = self.language if language is None else language
        self.task = self.task if task is None else task
        self.predict_timestamps = self.predict_timestamps if predict_timestamps is None else predict_timestamps
        ids = self.prefix_tokens
        tokens = [self._token(i) for i in ids]
        prefix = " ".join(f"{token}:0" for token in tokens)
        eos = self.eos_token
        self.tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{prefix} $A:0 {eos}:0", pair=f"{prefix} $A:0 $B:1 {eos}:1",
            special_tokens=[(eos, self.eos_token_id), *zip(tokens, ids)])

    def get_decoder_prompt_ids(self, task=None, language=None, no_timestamps=True):
        """generate's forced_decoder_ids for that prefix: [(1, language id), (2, task id), (3, notimestamps id)]."""
        self.set_prefix_tokens(task=task, language=language, predict_timestamps=not no_timestamps)
        return [(rank + 1, token) for rank, token in enumerate(self.prefix_tokens[1:])]

    def decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None, **kwargs):
        rows = _rows(token_ids)
        if skip_special_tokens and isinstance(rows, (list, tuple)) and rows and \
                not isinstance(_rows(rows[0]), (list, tuple)):
            rows = _id_list(rows)
            start, prompt = self._token_id("<|startoftranscript|>"), self._token_id("<|startofprev|>")
            if rows[0] == prompt:  # (the prompt goes, up to the transcript's start)
                rows = rows[rows.index(start):] if start in rows else []
        return super().decode(rows, skip_special_tokens, clean_up_tokenization_spaces, **kwargs)

    def _decode(self, token_ids, skip_special_tokens):
        return self._timestamp.sub("", super()._decode(token_ids, skip_special_tokens))


class SplinterTokenizer(HFTokenizer):
    """transformers' SplinterTokenizer: its question token ([QUESTION]) marks the question in a pair."""

    question_token = "[QUESTION]"
    question_token_id = property(lambda self: self._token_id(self.question_token))

    def _class_init(self, settings):
        self.question_token = _setting(settings, "question_token", "[QUESTION]")


class CTCTokenizer(HFTokenizer):
    """transformers' ParakeetTokenizer / LasrTokenizer (speech recognition): decode reads CTC output, each run of
    one id once and the padding (CTC's blank) left out."""

    def _decode(self, token_ids, skip_special_tokens):
        grouped = [token for i, token in enumerate(token_ids) if i == 0 or token != token_ids[i - 1]]
        return super()._decode([token for token in grouped if token != self.pad_token_id], skip_special_tokens)


class CLIPTokenizer(HFTokenizer):
    """transformers' CLIPTokenizer: decoded text has each word's "</w>" as a space, and no spaces at its ends."""

    def _decode(self, token_ids, skip_special_tokens):
        suffix = self.tokenizer.model.end_of_word_suffix
        return super()._decode(token_ids, skip_special_tokens).replace(suffix, " ").strip()


class _ClassRule(NamedTuple):
    """How one transformers class loads a tokenizer.json."""
    pipeline: object  # (backend, settings): sets the normalizer, pre-tokenizer and decoder as its __init__;
    # None: the file's model and pipeline as written (a class whose __init__ is its base's: transformers hands the
    # file to it whole), with the class's special tokens and call options
    model: dict  # the BPE options its __init__ passes besides the file's vocabulary and merges
    special_tokens: dict  # its default named special tokens: where tokenizer_config.json names none
    extra_special_tokens: object = ()  # its own extra special tokens (CodeLlama's infilling ones), or
    # (tokenizer_config) -> them (T5's sentinels)
    add_bos_token: bool = False  # what add_bos_token reads after loading (True: a BOS post-processor)
    rebuilds_post_processor: bool = False  # update_post_processor() at load: the file's post-processor goes
    tokenizer_type: type = HFTokenizer  # minilora's class for it (CodeLlama's infilling)
    post_processor: object = None  # (tokenizer) -> the template its __init__ sets last (T5's "$A </s>", BERT's ...)
    model_input_names: tuple = ("input_ids", "attention_mask")  # what a call returns (BERT's token_type_ids too)
    lstrip_mask: object = False  # a mask token it adds takes the space before it (mBART's; "normalized":
    # matched in the normalized text, NLLB's)
    post_processor_before: object = None  # (tokenizer) -> the template its __init__ sets before the file's: where
    # the file has none
    post_init: bool = False  # its __init__ ends with _post_init(): where the file has no post-processor (or the
    # caller passed add_bos_token / add_eos_token), the bos / eos template replaces the class's (RemBERT's)


_SENTENCEPIECE_BPE = {"fuse_unk": True, "byte_fallback": True}  # (Llama's: no unk_token, a character without
_BYTE_LEVEL_BPE = {"continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False}  # a token drops)
_WITH_UNK = "unk"  # a model option set to the class's unk_token


def _unk_position(vocab, unk_token):
    """CamembertTokenizer's Unigram unk_id: the unk token's place in the vocabulary (0 if absent)."""
    return next((i for i, (piece, _) in enumerate(vocab) if piece == unk_token), 0)


def _unk_scored_zero(vocab, unk_token):
    """DebertaV2Tokenizer's: the place of (unk token, score 0.0) in the vocabulary, else 1."""
    return next((i for i, entry in enumerate(vocab) if entry == [unk_token, 0.0]), 1)


def _unk_scored_zero_or_100(vocab, unk_token):
    """BigBirdTokenizer's: the place of (unk token, score 0.0), else 100."""
    return next((i for i, entry in enumerate(vocab) if entry == [unk_token, 0.0]), 100)


def _unk_scored_zero_after_first(vocab, unk_token):
    """PegasusTokenizer's: the place of (unk token, score 0.0) from position 1 on (``list.index(x, 1)``)."""
    found = next((i for i, entry in enumerate(vocab) if i >= 1 and entry == [unk_token, 0.0]), None)
    if found is None:  # (transformers' list.index ValueError, with the reason)
        raise ValueError(f"PegasusTokenizer needs its unk token ({unk_token!r}, score 0.0) in the Unigram "
                         "vocabulary after the first piece")
    return found


_ENDOFTEXT = {"unk": "<|endoftext|>", "bos": "<|endoftext|>", "eos": "<|endoftext|>"}
_WORDPIECE = {"type": "WordPiece", "unk_token": _WITH_UNK}  # (its "##" prefix and 100-character words: defaults)
_BERT_SPECIAL_TOKENS = {"unk": "[UNK]", "sep": "[SEP]", "pad": "[PAD]", "cls": "[CLS]", "mask": "[MASK]"}
_FAIRSEQ_SPECIAL_TOKENS = {"bos": "<s>", "eos": "</s>", "sep": "</s>", "cls": "<s>", "unk": "<unk>", "pad": "<pad>",
                           "mask": "<mask>"}
_CLASS_RULES = {
    "LlamaTokenizer": _ClassRule(_llama_pipeline, _SENTENCEPIECE_BPE,
                                 {"unk": "<unk>", "bos": "<s>", "eos": "</s>"}),
    "CodeLlamaTokenizer": _ClassRule(_code_llama_pipeline, {**_SENTENCEPIECE_BPE, "unk_token": _WITH_UNK},
                                     {"unk": "<unk>", "bos": "<s>", "eos": "</s>"},
                                     ("▁<PRE>", "▁<MID>", "▁<SUF>", "▁<EOT>", "<FILL_ME>"), add_bos_token=True,
                                     rebuilds_post_processor=True,  # (it passes add_bos_token=True on)
                                     tokenizer_type=CodeLlamaTokenizer),
    "GemmaTokenizer": _ClassRule(_gemma_pipeline, {**_SENTENCEPIECE_BPE, "unk_token": _WITH_UNK},
                                 {"unk": "<unk>", "bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "mask": "<mask>"}),
    "CohereTokenizer": _ClassRule(_cohere_pipeline, _BYTE_LEVEL_BPE,
                                  {"unk": "<UNK>", "bos": "<BOS_TOKEN>", "eos": "<|END_OF_TURN_TOKEN|>", "pad": "<PAD>",
                                   "cls": "<CLS>", "sep": "<SEP>", "mask": "<MASK_TOKEN>"}),
    "Qwen2Tokenizer": _ClassRule(_qwen_pipeline(_QWEN2_REGEX), _BYTE_LEVEL_BPE,
                                 {"unk": "<|endoftext|>", "eos": "<|endoftext|>", "pad": "<|endoftext|>"}),
    "Qwen3_5Tokenizer": _ClassRule(_qwen_pipeline(_QWEN3_5_REGEX), _BYTE_LEVEL_BPE,
                                   {"unk": "<|endoftext|>", "eos": "<|endoftext|>", "pad": "<|endoftext|>"}),
    "GPT2Tokenizer": _ClassRule(_gpt2_pipeline, _BYTE_LEVEL_BPE, _ENDOFTEXT),
    "CodeGenTokenizer": _ClassRule(_codegen_pipeline, _BYTE_LEVEL_BPE, _ENDOFTEXT),
    "GPTNeoXTokenizer": _ClassRule(_gpt_neox_pipeline, _BYTE_LEVEL_BPE, {**_ENDOFTEXT, "pad": "<|padding|>"},
                                   rebuilds_post_processor=True),
    # the encoder (and encoder-decoder) classes: their own model type over the file's vocabulary, and their own
    # post-processor set after the rest (a file's, or the add_bos_token / add_eos_token template, is replaced)
    "T5Tokenizer": _ClassRule(_t5_pipeline, {"type": "Unigram", "unk_id": 2, "byte_fallback": False},
                              {"eos": "</s>", "unk": "<unk>", "pad": "<pad>"}, _t5_sentinels,
                              post_processor=_t5_post_processor),
    "XLMRobertaTokenizer": _ClassRule(_xlm_roberta_pipeline, {"type": "Unigram", "unk_id": 3, "byte_fallback": False},
                                      _FAIRSEQ_SPECIAL_TOKENS, post_processor=_xlm_roberta_post_processor),
    "CamembertTokenizer": _ClassRule(_xlm_roberta_pipeline, {"type": "Unigram", "unk_id": _unk_position,
                                                             "byte_fallback": False},
                                     _FAIRSEQ_SPECIAL_TOKENS, _camembert_unused, lstrip_mask=True,
                                     post_processor=_xlm_roberta_post_processor),
    "AlbertTokenizer": _ClassRule(_albert_pipeline, {"type": "Unigram", "unk_id": 1, "byte_fallback": False},
                                  {"bos": "[CLS]", "eos": "[SEP]", "unk": "<unk>", "sep": "[SEP]", "pad": "<pad>",
                                   "cls": "[CLS]", "mask": "[MASK]"}, post_processor_before=_albert_post_processor),
    "DebertaV2Tokenizer": _ClassRule(_deberta_v2_pipeline,
                                     {"type": "Unigram", "unk_id": _unk_scored_zero, "byte_fallback": False},
                                     {"bos": "[CLS]", "eos": "[SEP]", **_BERT_SPECIAL_TOKENS},
                                     post_processor=_deberta_v2_post_processor,
                                     model_input_names=("input_ids", "attention_mask", "token_type_ids")),
    "BertTokenizer": _ClassRule(_bert_pipeline, _WORDPIECE, _BERT_SPECIAL_TOKENS, post_processor=_bert_post_processor,
                                model_input_names=("input_ids", "token_type_ids", "attention_mask")),
    "DistilBertTokenizer": _ClassRule(_bert_pipeline, _WORDPIECE, _BERT_SPECIAL_TOKENS,
                                      post_processor=_bert_post_processor),
    "RobertaTokenizer": _ClassRule(_gpt2_pipeline, _BYTE_LEVEL_BPE, _FAIRSEQ_SPECIAL_TOKENS,
                                   post_processor=_roberta_post_processor),
    # translation: the language codes are extra special tokens, the post-processor the source language's
    "MBartTokenizer": _ClassRule(_mbart_pipeline, {"type": "Unigram", "unk_id": 3, "byte_fallback": False},
                                 _FAIRSEQ_SPECIAL_TOKENS, _languages(_MBART_LANGUAGES, "additional_special_tokens"),
                                 tokenizer_type=MBartTokenizer, post_processor=_source_language_template,
                                 lstrip_mask=True),
    "WhisperTokenizer": _ClassRule(_gpt2_pipeline, _BYTE_LEVEL_BPE, _ENDOFTEXT, tokenizer_type=WhisperTokenizer,
                                   post_processor=_whisper_prefix_template),
    "NllbTokenizer": _ClassRule(_nllb_pipeline, {"unk_token": _WITH_UNK, "fuse_unk": True, "byte_fallback": False},
                                _FAIRSEQ_SPECIAL_TOKENS, _languages(_NLLB_LANGUAGES, "extra_special_tokens"),
                                tokenizer_type=NllbTokenizer, post_processor=_source_language_template,
                                lstrip_mask="normalized"),
    # round 13: XLNet (special tokens at the end, left padding; its __init__'s pad type id 3 is reset to 0 by
    # the base class's), Pegasus (its mask and <unk_N>
    # placeholder tokens), MPNet (BERT's WordPiece under RoBERTa's template), Funnel, FNet
    "XLNetTokenizer": _ClassRule(_xlnet_pipeline, {"type": "Unigram", "unk_id": 0, "byte_fallback": False},
                                 {"bos": "<s>", "eos": "</s>", "unk": "<unk>", "sep": "<sep>", "pad": "<pad>",
                                  "cls": "<cls>", "mask": "<mask>"}, _xlnet_extra, lstrip_mask=True,
                                 post_processor=_xlnet_post_processor),
    "PegasusTokenizer": _ClassRule(_pegasus_pipeline, {"type": "Unigram", "unk_id": _unk_scored_zero_after_first},
                                   {"pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask_2>"}, _pegasus_extra,
                                   post_processor=_pegasus_post_processor),
    "MPNetTokenizer": _ClassRule(_bert_pipeline, _WORDPIECE, {**_FAIRSEQ_SPECIAL_TOKENS, "unk": "[UNK]"},
                                 lstrip_mask=True, post_processor=_mpnet_post_processor),
    "FunnelTokenizer": _ClassRule(_bert_pipeline, _WORDPIECE,
                                  {"unk": "<unk>", "sep": "<sep>", "pad": "<pad>", "cls": "<cls>", "mask": "<mask>",
                                   "bos": "<s>", "eos": "</s>"}, post_processor=_funnel_post_processor),
    "BigBirdTokenizer": _ClassRule(_big_bird_pipeline, {"type": "Unigram", "unk_id": _unk_scored_zero_or_100,
                                                        "byte_fallback": False},
                                   {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>", "sep": "[SEP]",
                                    "mask": "[MASK]", "cls": "[CLS]"}, lstrip_mask=True,
                                   post_processor=_big_bird_post_processor),
    "DebertaTokenizer": _ClassRule(_gpt2_pipeline, _BYTE_LEVEL_BPE, {"bos": "[CLS]", "eos": "[SEP]",
                                                                     **_BERT_SPECIAL_TOKENS},
                                   post_processor=_deberta_post_processor,  # (its mask_token setter's
                                   # lstrip never reaches the backend)
                                   model_input_names=("input_ids", "attention_mask", "token_type_ids")),
    "CLIPTokenizer": _ClassRule(_clip_pipeline, {**_BYTE_LEVEL_BPE, "end_of_word_suffix": "</w>",
                                                 "unk_token": _WITH_UNK},
                                {"unk": "<|endoftext|>", "bos": "<|startoftext|>", "eos": "<|endoftext|>",
                                 "pad": "<|endoftext|>"}, tokenizer_type=CLIPTokenizer,
                                post_processor=_clip_post_processor),
    "MBart50Tokenizer": _ClassRule(_mbart50_pipeline, {"type": "Unigram", "unk_id": 3, "byte_fallback": False,
                                                       "vocab": _mbart50_vocab},
                                   {kind: token for kind, token in _FAIRSEQ_SPECIAL_TOKENS.items() if kind != "bos"},
                                   _MBART50_LANGUAGES, tokenizer_type=MBart50Tokenizer,
                                   post_processor=_source_language_template, lstrip_mask=True),
    "OpenAIGPTTokenizer": _ClassRule(_openai_gpt_pipeline, {**_BYTE_LEVEL_BPE, "end_of_word_suffix": "</w>",
                                                             "unk_token": _WITH_UNK}, {"unk": "<unk>"}),
    "XGLMTokenizer": _ClassRule(_xglm_pipeline, {"type": "Unigram", "unk_id": 3, "byte_fallback": False},
                                {kind: token for kind, token in _FAIRSEQ_SPECIAL_TOKENS.items() if kind != "mask"},
                                tuple(f"<madeupword{i}>" for i in range(7)), post_processor=_xglm_post_processor),
    "RemBertTokenizer": _ClassRule(_rembert_pipeline, {"type": "Unigram", "unk_id": 2, "byte_fallback": False},
                                   {"bos": "[CLS]", "eos": "[SEP]", "unk": "<unk>", "sep": "[SEP]", "pad": "<pad>",
                                    "cls": "[CLS]", "mask": "[MASK]"}, post_processor=_big_bird_post_processor,
                                   post_init=True),
    "BlenderbotTokenizer": _ClassRule(_blenderbot_pipeline, _BYTE_LEVEL_BPE, _FAIRSEQ_SPECIAL_TOKENS,
                                      lstrip_mask=True),
    "HerbertTokenizer": _ClassRule(_herbert_pipeline, {"unk_token": _WITH_UNK, "end_of_word_suffix": "</w>"},
                                   {"cls": "<s>", "unk": "<unk>", "pad": "<pad>", "mask": "<mask>", "sep": "</s>"},
                                   post_processor=_herbert_post_processor),
    "ReformerTokenizer": _ClassRule(_reformer_pipeline, {"unk_token": _WITH_UNK, "fuse_unk": True},
                                    {"eos": "</s>", "unk": "<unk>"}),
    "BarthezTokenizer": _ClassRule(_barthez_pipeline, {"type": "Unigram", "unk_id": 3, "byte_fallback": False},
                                   _FAIRSEQ_SPECIAL_TOKENS, lstrip_mask=True),
    "Siglip2Tokenizer": _ClassRule(_siglip2_pipeline, {**_SENTENCEPIECE_BPE, "unk_token": _WITH_UNK},
                                   {"unk": "<unk>", "bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "mask": "<mask>"}),
    "SplinterTokenizer": _ClassRule(_bert_pipeline, _WORDPIECE, _BERT_SPECIAL_TOKENS,
                                    lambda config: [_setting(config, "question_token", "[QUESTION]")],
                                    tokenizer_type=SplinterTokenizer, post_processor=_splinter_post_processor),
    **dict.fromkeys(("DPRContextEncoderTokenizer", "DPRQuestionEncoderTokenizer"), _ClassRule(
        _dpr_pipeline, _WORDPIECE, _BERT_SPECIAL_TOKENS, post_processor=_bert_post_processor,
        model_input_names=("input_ids", "token_type_ids", "attention_mask"))),
    # speech and video: Parakeet runs its file as written (no special tokens of its own), LASR and VideoPrism are
    # T5's pipeline with their own unk id; Parakeet's and LASR's decode reads CTC output
    "ParakeetTokenizer": _ClassRule(None, {}, {}, tokenizer_type=CTCTokenizer),
    "LasrTokenizer": _ClassRule(_t5_pipeline, {"type": "Unigram", "unk_id": 3, "byte_fallback": False},
                                {"eos": "</s>", "unk": "<unk>", "pad": "<pad>"}, _t5_sentinels,
                                tokenizer_type=CTCTokenizer, post_processor=_t5_post_processor),
    "VideoPrismTokenizer": _ClassRule(_t5_pipeline, {"type": "Unigram", "unk_id": 2, "byte_fallback": False},
                                      {"eos": "</s>", "unk": "<unk>", "pad": "<pad>"}, _t5_sentinels),
    "NougatTokenizer": _ClassRule(_nougat_pipeline, _BYTE_LEVEL_BPE,
                                  {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"},
                                  post_processor=_nougat_post_processor),
}
# FNetTokenizer is AlbertTokenizer without an __init__ of its own: transformers runs its file as written, with
# ALBERT's default special tokens, and returns token_type_ids without attention_mask
_CLASS_RULES["FNetTokenizer"] = _CLASS_RULES["AlbertTokenizer"]._replace(
    pipeline=None, post_processor_before=None, model_input_names=("input_ids", "token_type_ids"))
# transformers 5.25's tokenizer classes minilora has no rule for. Each one's __init__ rebuilds the pipeline its own
# way, or it is a Python tokenizer reading files of its own (a vocab.txt, SentencePiece's .model / .spm, ...):
# run as written, the tokenizer.json would give other ids than transformers' without a word, so loading one is
# refused (tests/test_tokenizer_classes_r13.py surveys them all)
_SENTENCEPIECE_CLASSES = frozenset({
    "BartphoTokenizer", "BertGenerationTokenizer", "CpmTokenizer", "GPTSw3Tokenizer", "M2M100Tokenizer",
    "MarianTokenizer", "PLBartTokenizer", "SiglipTokenizer", "Speech2TextTokenizer", "SpeechT5Tokenizer"})
_PYTHON_CLASSES = frozenset({
    "BertJapaneseTokenizer", "BertTokenizerLegacy", "BertweetTokenizer", "BioGptTokenizer", "BlenderbotSmallTokenizer",
    "ByT5Tokenizer", "CTRLTokenizer", "CanineTokenizer", "ClvpTokenizer", "CpmAntTokenizer", "DiaTokenizer",
    "EsmTokenizer", "FSMTTokenizer", "FastSpeech2ConformerTokenizer", "FlaubertTokenizer", "GPTNeoXJapaneseTokenizer",
    "MgpstrTokenizer", "MyT5Tokenizer", "PerceiverTokenizer", "PhobertTokenizer", "Pop2PianoTokenizer",
    "ProphetNetTokenizer", "RoCBertTokenizer", "TapasTokenizer", "VitsTokenizer", "Wav2Vec2CTCTokenizer",
    "Wav2Vec2PhonemeCTCTokenizer", "XLMTokenizer"})
_REBUILDING_CLASSES = frozenset({
    "DPRReaderTokenizer", "ErgoTokenizer", "EsmcTokenizer", "LayoutLMv2Tokenizer", "LayoutLMv3Tokenizer",
    "LayoutXLMTokenizer", "LukeTokenizer", "MLukeTokenizer", "MarkupLMTokenizer", "RoFormerTokenizer",
    "SeamlessM4TTokenizer", "Tipsv2Tokenizer", "UdopTokenizer"})


def _refuse_class_without_rule(tokenizer_class, path):
    """A class of transformers' that minilora does not implement is refused by name, never run as written."""
    if tokenizer_class in _SENTENCEPIECE_CLASSES:
        why = ("a SentencePiece tokenizer (transformers needs the sentencepiece package and the folder's "
               ".model / .spm files for it)")
    elif tokenizer_class in _PYTHON_CLASSES:
        why = "a Python tokenizer that reads vocabulary files of its own"
    elif tokenizer_class in _REBUILDING_CLASSES:
        why = "a class whose __init__ rebuilds the tokenizer.json's pipeline its own way"
    else:
        return
    if not os.path.isfile(path):  # (a Marian folder: its .spm files, no tokenizer.json)
        raise NotImplementedError(f"{os.path.dirname(path) or '.'}: the folder is transformers' {tokenizer_class}, "
                                  f"{why}; minilora does not implement that class, and the folder has no "
                                  f"{TOKENIZER_FILE}")
    raise NotImplementedError(
        f"{path}: the folder is transformers' {tokenizer_class}, {why}; minilora does not implement that class, "
        "and running the tokenizer.json as written would tokenize differently. To run the file as written anyway, "
        'set "tokenizer_class": "PreTrainedTokenizerFast" in its tokenizer_config.json')


# the names transformers 5.25 exports as another class (transformers.ElectraTokenizer is BertTokenizer)
_CLASS_ALIASES = {**dict.fromkeys(("ElectraTokenizer", "LayoutLMTokenizer", "MobileBertTokenizer",
                                   "SqueezeBertTokenizer", "LxmertTokenizer", "ConvBertTokenizer"), "BertTokenizer"),
                  **dict.fromkeys(("BartTokenizer", "LongformerTokenizer", "LEDTokenizer", "MvpTokenizer"),
                                  "RobertaTokenizer")}
# the __init__ arguments the pipelines read
CLASS_SETTINGS = ("legacy", "add_prefix_space", "trim_offsets", "do_lower_case", "strip_accents",
                  "tokenize_chinese_chars", "keep_accents", "split_by_punct", "extra_ids", "src_lang", "tgt_lang",
                  "legacy_behaviour", "language", "task", "predict_timestamps", "mask_token_sent", "offset",
                  "question_token")


def _rebuilt_model(backend, rule, chosen):
    """The file's model as the class's __init__ rebuilds it, from the file's vocabulary as transformers'
    convert_to_native_format passes it: ``BPE(vocab, merges, dropout=None, **rule.model)``, every other option at
    its default (no unk_token unless the class passes one, no subword prefix, merges not ignored; another model's
    vocabulary becomes a BPE without merges: text is split into single characters there); ``WordPiece(vocab,
    unk_token)``; ``Unigram(vocab with scores, unk_id)`` (a class may rebuild the vocabulary: mBART-50's).
    ``chosen``: the special tokens by kind."""
    from tokenizers import Tokenizer
    unk_token = chosen["unk"]
    spec = json.loads(backend.to_str())
    options = {key: unk_token if value == _WITH_UNK else value for key, value in rule.model.items() if key != "type"}
    kind = rule.model.get("type", "BPE")
    model = spec["model"]
    if kind == "Unigram":
        vocab = model.get("vocab")
        if not (isinstance(vocab, list) and vocab and all(isinstance(entry, list) for entry in vocab)):
            raise ValueError(f"this tokenizer class builds a Unigram model, which needs a vocabulary of pieces with "
                             f"scores; the tokenizer.json's {model.get('type')} model has none")
        if callable(options.get("unk_id")):  # (a class that looks its unk token up)
            options["unk_id"] = options["unk_id"](vocab, unk_token)
        if "vocab" in options:
            vocab = options.pop("vocab")(vocab, chosen)
        spec["model"] = {"type": "Unigram", "vocab": vocab, **options}
    elif kind == "WordPiece":
        spec["model"] = {"type": "WordPiece", "vocab": _vocab_ids(model), "continuing_subword_prefix": "##",
                         "max_input_chars_per_word": 100, **options}
    else:
        merges = model.get("merges") if model.get("type") == "BPE" else None
        spec["model"] = {"type": "BPE", "vocab": _vocab_ids(model), "merges": merges or [], "dropout": None,
                         "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                         "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, **options}
    return Tokenizer.from_str(json.dumps(spec))


def _vocab_ids(model):
    """A tokenizer.json model's vocabulary as {token: id} (Unigram's list of [piece, score]: the position)."""
    vocab = model.get("vocab") or {}
    return vocab if isinstance(vocab, dict) else \
        {entry[0] if isinstance(entry, list) else entry: i for i, entry in enumerate(vocab)}


def _added_special_tokens(backend, tokens, lstrip=None, normalized=False):
    """TokenizersBackend.__init__'s last step: each special token not yet among the added tokens is added as a
    special one (a vocabulary token keeps its id and is then read whole in text; a new one gets the next id);
    ``lstrip``: the one added taking the spaces before it (mBART's mask token), matched in the normalized text
    where ``normalized`` (NLLB's), else in the text as given."""
    from tokenizers import AddedToken
    added = {token.content for token in backend.get_added_tokens_decoder().values()}
    missing = list(dict.fromkeys(token for token in tokens if token is not None and token not in added))
    if missing:
        backend.add_tokens([AddedToken(token, special=True, lstrip=token == lstrip,
                                       normalized=normalized and token == lstrip)
                            for token in missing])


_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # a byte-fallback token (SentencePiece, Llama 2)


def token_bytes(tokenizer, token_id):
    """The bytes one token stands for, also when they are no text on their own (a piece of a character, which
    ``decode([id])`` can only show as U+FFFD): the byte tokenizer's id is its byte; a byte-level BPE token's
    characters stand for bytes (GPT-2's table); a byte-fallback token ``<0xE2>`` is that byte; a SentencePiece
    piece ``▁a`` is `` a`` (the space a word starts with, which ``decode`` drops at a text's start); an added
    token is its text. None when the tokenizer has no such rule (its decoded text is then all there is)."""
    if isinstance(tokenizer, ByteTokenizer):
        return bytes([token_id]) if 0 <= token_id < 256 else tokenizer._token(token_id).encode("utf-8")
    if not isinstance(tokenizer, HFTokenizer):
        return None
    added, kinds, marker = _byte_rules(tokenizer)
    token = added[token_id] if token_id in added else tokenizer.tokenizer.id_to_token(token_id)
    if token_id in added or token is None:
        return None if token is None else token.encode("utf-8")
    piece = _BYTE_PIECE.fullmatch(token)
    if piece and "ByteFallback" in kinds:
        return bytes([int(piece.group(1), 16)])
    table = _char_to_byte()
    if "ByteLevel" in kinds and all(char in table for char in token):
        return bytes(table[char] for char in token)
    return None if marker is None else token.replace(marker, " ").encode("utf-8")


@functools.lru_cache(maxsize=None)
def _char_to_byte():
    return {char: byte for byte, char in _byte_to_char().items()}


def _byte_rules(tokenizer):
    """What token_bytes reads from a tokenizer.json tokenizer, read once (again after add_tokens): its added
    tokens {id: text}, its decoders' types and its space marker."""
    if "_byte_rules" not in tokenizer.__dict__:
        backend = tokenizer.tokenizer
        decoders = _decoders(backend)
        tokenizer._byte_rules = ({i: token.content for i, token in backend.get_added_tokens_decoder().items()},
                                 {decoder.get("type") for decoder in decoders}, _space_marker(decoders))
    return tokenizer._byte_rules


def _decoders(backend):
    """A ``tokenizers.Tokenizer``'s decoder and the decoders in it (a Sequence), as their JSON settings."""
    if backend.decoder is None:
        return []
    found, todo = [], [json.loads(backend.decoder.__getstate__())]
    while todo:
        found.append(todo.pop())
        todo += found[-1].get("decoders") or []
    return found


def _space_marker(decoders):
    """The character a SentencePiece vocabulary writes spaces as ("▁"), read from the decoder that turns it back
    (Metaspace, or Llama 2's Replace "▁" -> " "); None for other vocabularies."""
    for decoder in decoders:
        if decoder.get("type") == "Metaspace":
            return decoder.get("replacement", "\u2581")
        pattern = decoder.get("pattern") or {}
        if decoder.get("type") == "Replace" and decoder.get("content") == " " and pattern.get("String"):
            return pattern["String"]
    return None


def vocab_mismatch(tokenizer, model_vocab_size):
    """Why ``tokenizer`` cannot feed a model with ``model_vocab_size`` token rows, or None if it can.

    A model may have more rows than its tokenizer (vocabularies are padded), never fewer. The byte
    tokenizer's ids mean bytes only to a model trained on them: its 259 rows, padded at most to the next
    multiple of 64 (``resize_token_embeddings(pad_to_multiple_of=64)``); a bigger vocabulary is a model
    made for another tokenizer, whose output decoded as bytes would be silently meaningless."""
    if isinstance(tokenizer, ByteTokenizer):  # (its added tokens counted: a model resized for them)
        size = len(tokenizer)
        padded = -(-size // 64) * 64
        if not size <= model_vocab_size <= padded:
            return (f"the model has vocab_size {model_vocab_size} but minilora's byte-level tokenizer has "
                    f"{size} tokens (a byte-level model has {size} to {padded}): "
                    "the model was made for another tokenizer")
    if model_vocab_size < len(tokenizer):
        return (f"the model has vocab_size {model_vocab_size}, fewer than the tokenizer's {len(tokenizer)} "
                "tokens: they were not made for each other")
    return None


def from_pretrained(pretrained_model_name_or_path, **kwargs):
    """A tokenizer folder as transformers saves it (``tokenizer.json`` + ``tokenizer_config.json``).
    ``kwargs``: ``bos_token``, ``eos_token``, ``pad_token``, ``padding_side``, ... (as for ``from_file``)."""
    from .checkpoint import one_version_of, put_back_a_cut_swap
    path = os.fspath(pretrained_model_name_or_path)
    put_back_a_cut_swap(path)  # (a save killed half-way through its folder swap)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path!r} is not a folder: minilora loads tokenizers from a local folder with "
                                f"{TOKENIZER_FILE} (it does not download from the Hugging Face Hub)")
    with one_version_of(path):  # (tokenizer.json, its config and chat template of one save, whoever saves meanwhile)
        tokenizer = from_file(path, **kwargs)
    tokenizer.name_or_path = path  # (transformers' attribute: the folder it was loaded from)
    return tokenizer


def model_tokenizer(folder):
    """The tokenizer that goes with the model in ``folder``: its ``tokenizer.json`` (or Mistral's ``tekken.json``)
    when it has one (the rule transformers and vLLM follow: a model folder holds its tokenizer), else minilora's
    byte-level tokenizer (also for ``folder`` None: the shipped base model). ``minilora generate`` and ``minilora
    serve`` both choose by this one rule."""
    if folder is not None and any(os.path.isfile(os.path.join(os.fspath(folder), name))
                                  for name in (TOKENIZER_FILE, TEKKEN_FILE)):
        return from_pretrained(folder)
    return ByteTokenizer()


def _token_text(token):
    """A special token as tokenizer_config.json writes it: a string or ``{"content": ...}``."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None


def _check_special_tokens(config_path, config):
    """A special token that is neither a string, ``{"content": "..."}`` nor null (``"bos_token": 7``) is
    refused: read as "no such token", the model would silently lose its BOS or EOS."""
    for kind in SPECIAL_KINDS:
        token = config.get(f"{kind}_token")
        if token is not None and _token_text(token) is None:
            raise ValueError(f"{config_path}: {kind}_token must be a string, {{\"content\": string}} or null, "
                             f"got {token!r}")


def _extra_special_tokens(config):
    """tokenizer_config.json's extra special tokens (``additional_special_tokens``: transformers 4's name): a
    list, or a dict of named tokens (``{"image_token": "<image>"}``: its values are the tokens, as transformers
    5 adds them)."""
    tokens = config.get("extra_special_tokens") or config.get("additional_special_tokens") or ()
    return [_token_text(token) for token in (tokens.values() if isinstance(tokens, dict) else tokens)]


def _check_extra_special_tokens(config_path, config):
    """A string (``"extra_special_tokens": "<x>"``) read as a list would add one special token per letter, and
    a number in the list was dropped: refused as transformers refuses them, naming the file."""
    for key in ("extra_special_tokens", "additional_special_tokens"):
        tokens = config.get(key)
        if tokens is None:
            continue
        if not isinstance(tokens, (list, dict)):  # transformers' TypeError and words
            raise TypeError(f"{config_path}: {key} must be a list/tuple of tokens or a dict of named tokens, "
                            f"got {tokens!r}")
        bad = [t for t in (tokens.values() if isinstance(tokens, dict) else tokens) if _token_text(t) is None]
        if bad:
            raise TypeError(f"{config_path}: {key} must hold tokens (strings or {{\"content\": string}}), "
                            f"got {bad[0]!r}")


def _with_chat_template_files(config, folder):
    """``config`` with the folder's chat template files in place of its ``chat_template``, as transformers 5 reads
    them first: ``chat_template.jinja`` (the default) and ``additional_chat_templates/<name>.jinja`` (named ones: a
    dict then). A list of ``{"name", "template"}`` in the config (transformers 4's named templates) is that dict too."""
    templates = {}
    file = os.path.join(folder, CHAT_TEMPLATE_FILE)
    if os.path.isfile(file):
        templates["default"] = _read_text(file)
    named = os.path.join(folder, CHAT_TEMPLATE_DIR)
    if os.path.isdir(named):
        for entry in sorted(os.listdir(named)):
            if entry.endswith(".jinja") and os.path.isfile(os.path.join(named, entry)):
                templates[entry[:-len(".jinja")]] = _read_text(os.path.join(named, entry))
    if templates:
        return {**config, "chat_template": templates["default"] if list(templates) == ["default"] else templates}
    template = config.get("chat_template")
    if isinstance(template, list):
        if not all(isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str)
                   for t in template):
            raise ValueError(f"{os.path.join(folder, TOKENIZER_CONFIG_FILE)}: a chat_template list holds "
                             '{"name": ..., "template": ...} objects, got ' + repr(template)[:200])
        return {**config, "chat_template": {t["name"]: t["template"] for t in template}}
    return config


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None


def _chat_template_files(template):
    """The files transformers 5's save_pretrained writes for a chat template: ``{relative path: text}``."""
    if isinstance(template, str):
        return {CHAT_TEMPLATE_FILE: template}
    if not isinstance(template, dict):
        return {}
    files = {}
    for name, text in template.items():
        if name == "default":
            files[CHAT_TEMPLATE_FILE] = text
            continue
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or os.sep in name:
            raise ValueError(f"Invalid chat template name: {name!r}")  # (transformers': a path out of the folder)
        files[os.path.join(CHAT_TEMPLATE_DIR, f"{name}.jinja")] = text
    return files


def _tokenizer_config(config_path):
    if os.path.lexists(config_path) and not os.path.isfile(config_path):  # its settings must not vanish
        raise OSError(f"{config_path} is not a readable file (a folder, or a link to nothing)")
    if not os.path.isfile(config_path):
        return {}
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: a tokenizer config must be a JSON object, got a {type(config).__name__}")
    _check_config_values(config_path, config)
    _check_special_tokens(config_path, config)
    _check_extra_special_tokens(config_path, config)
    return config


def _check_config_values(config_path, config):
    """Refuse at load the values transformers refuses at load (a bad side would otherwise fail at the
    first call, far from the file that holds it)."""
    for key in ("padding_side", "truncation_side"):
        if config.get(key) is not None and config[key] not in ("left", "right"):
            raise ValueError(f"{config_path}: {key} must be 'left' or 'right', got {config[key]!r}")
    kind = config.get("tokenizer_class")
    if kind is not None and not isinstance(kind, str):  # (transformers fails on it: 'int' has no 'removesuffix')
        raise ValueError(f"{config_path}: tokenizer_class must be a class name string, got {kind!r}")
    template = config.get("chat_template")
    if template is not None and not isinstance(template, (str, list, dict)):  # (a list/dict: named templates)
        raise ValueError(f"{config_path}: chat_template must be a Jinja template string, got {template!r}")
    length = config.get("model_max_length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise ValueError(f"{config_path}: model_max_length must be an integer >= 1, got {length!r}")
