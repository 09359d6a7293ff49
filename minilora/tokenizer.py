"""Tokenizers: text <-> token ids.

Two with one interface (``encode``, ``decode``, ``vocab_size``, ``bos_token_id``, ``eos_token_id``,
``pad_token_id``, and ``tokenizer(texts)`` for a padded batch):

* ``ByteTokenizer()`` -- built in, needs no files: the UTF-8 bytes of the text are the ids 0..255,
  followed by three special tokens (bos 256, eos 257, pad 258). Every string round-trips, nothing is
  ever unknown, and a learner can decode ids by hand (``ord('a') == 97``).
* ``from_file("tokenizer.json")`` -- a real Hugging Face tokenizer (BPE, SentencePiece-style, ...)
  run by the ``tokenizers`` package, for checkpoints trained with one.

As in transformers, ``encode`` adds the beginning-of-sequence token by default
(``add_special_tokens=True``); pass ``False`` for the bare ids of a piece of text.
"""
import json
import os

import numpy as np

__all__ = ["ByteTokenizer", "HFTokenizer", "from_file"]


class _Tokenizer:
    """What both tokenizers share: batching and padding on top of ``encode``."""

    bos_token_id = eos_token_id = pad_token_id = None

    def __len__(self):
        return self.vocab_size

    def __call__(self, texts, add_special_tokens=True, padding_side="right"):
        """``{"input_ids", "attention_mask"}``: int64 arrays [batch, longest], padded with
        ``pad_token_id`` (mask 0) on the right, or on the left (for batched generation)."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        single = isinstance(texts, str)
        encoded = [self.encode(t, add_special_tokens) for t in ([texts] if single else texts)]
        width = max((len(e) for e in encoded), default=0)
        pad = self.pad_token_id if self.pad_token_id is not None else self.eos_token_id
        if pad is None and any(len(e) < width for e in encoded):
            raise ValueError("padding needs a pad_token_id (or an eos_token_id to pad with)")
        ids = np.full((len(encoded), width), pad if pad is not None else 0, dtype=np.int64)
        mask = np.zeros((len(encoded), width), dtype=np.int64)
        for row, e in enumerate(encoded):
            cols = slice(0, len(e)) if padding_side == "right" else slice(width - len(e), width)
            ids[row, cols], mask[row, cols] = e, 1
        return {"input_ids": ids, "attention_mask": mask}

    def batch_decode(self, sequences, skip_special_tokens=True):
        return [self.decode(s, skip_special_tokens) for s in sequences]


def _id_list(ids):
    """Ids as a list of Python ints, from a list, an array or a minilora Tensor."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]


class ByteTokenizer(_Tokenizer):
    """UTF-8 bytes as tokens: ids 0..255 are bytes, then ``<bos>`` 256, ``<eos>`` 257, ``<pad>`` 258."""

    bos_token_id, eos_token_id, pad_token_id = 256, 257, 258
    special_tokens = {"<bos>": 256, "<eos>": 257, "<pad>": 258}
    vocab_size = 259

    def encode(self, text, add_special_tokens=True):
        ids = list(text.encode("utf-8"))
        return [self.bos_token_id] + ids if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens=True):
        """Text of ``ids``. Special tokens are dropped, or written as ``<eos>`` etc.; byte sequences
        that are not valid UTF-8 (a cut-off character) become U+FFFD."""
        names = {i: name for name, i in self.special_tokens.items()}
        out, pending = [], bytearray()
        for i in _id_list(ids):
            if 0 <= i < 256:
                pending.append(i)
                continue
            if i not in names:
                raise ValueError(f"token id {i} is outside the byte tokenizer's vocabulary "
                                 f"(0..{self.vocab_size - 1})")
            out.append(pending.decode("utf-8", errors="replace"))
            pending = bytearray()
            if not skip_special_tokens:
                out.append(names[i])
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    def __repr__(self):
        return "ByteTokenizer(vocab_size=259, bos=256, eos=257, pad=258)"


class HFTokenizer(_Tokenizer):
    """A ``tokenizers.Tokenizer`` behind minilora's tokenizer interface."""

    def __init__(self, tokenizer, bos_token=None, eos_token=None, pad_token=None):
        self.tokenizer = tokenizer
        self.bos_token_id = self._id(bos_token)
        self.eos_token_id = self._id(eos_token)
        self.pad_token_id = self._id(pad_token)

    def _id(self, token):
        if token is None:
            return None
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"special token {token!r} is not in the tokenizer's vocabulary")
        return token_id

    @property
    def vocab_size(self):
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text, add_special_tokens=True):
        """Ids of ``text``; ``add_special_tokens`` runs the tokenizer's post-processor (which is what
        adds BOS for Llama tokenizers)."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens=True):
        return self.tokenizer.decode(_id_list(ids), skip_special_tokens=skip_special_tokens)

    def __repr__(self):
        return (f"HFTokenizer(vocab_size={self.vocab_size}, bos={self.bos_token_id}, "
                f"eos={self.eos_token_id}, pad={self.pad_token_id})")


# Names special tokens go by in common tokenizers, tried when tokenizer_config.json does not say.
_GUESSES = {"bos": ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", "[CLS]"),
            "eos": ("</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>", "[SEP]"),
            "pad": ("<pad>", "[PAD]", "<|pad|>")}


def from_file(path, bos_token=None, eos_token=None, pad_token=None):
    """Load a Hugging Face ``tokenizer.json`` (needs the ``tokenizers`` package).

    The special tokens come from the arguments, else from ``tokenizer_config.json`` next to the file,
    else from the usual names (``<s>``, ``</s>``, ``<pad>``, ``<|begin_of_text|>``, ...).
    """
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ImportError("from_file needs the tokenizers package: pip install tokenizers") from None
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tokenizer file at {path}")
    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
        raise ValueError(f"{path}: not a valid tokenizer.json ({exc})") from None
    declared = _declared_special_tokens(os.path.join(os.path.dirname(path), "tokenizer_config.json"))
    chosen = {"bos": bos_token, "eos": eos_token, "pad": pad_token}
    for kind, token in chosen.items():
        if token is None:
            token = declared.get(kind)
        if token is None:
            token = next((t for t in _GUESSES[kind] if tokenizer.token_to_id(t) is not None), None)
        chosen[kind] = token
    return HFTokenizer(tokenizer, chosen["bos"], chosen["eos"], chosen["pad"])


def _declared_special_tokens(config_path):
    """``{"bos": "<s>", ...}`` from a tokenizer_config.json (values may be strings or dicts)."""
    if not os.path.isfile(config_path):
        return {}
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: a tokenizer config must be a JSON object, got a {type(config).__name__}")
    out = {}
    for kind in ("bos", "eos", "pad"):
        token = config.get(f"{kind}_token")
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str):
            out[kind] = token
    return out
