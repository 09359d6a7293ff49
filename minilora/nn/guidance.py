"""Two of transformers' logits processors that carry state of their own, for ``generate``:

* classifier-free guidance (``guidance_scale``, with ``negative_prompt_ids``): the model runs a second time,
  on the negative prompt (or on the prompt's last token), with its own KV cache, and each step's
  log-probabilities are pushed away from that unconditional branch:
  ``scale * (log p(x | prompt) - log p(x | negative)) + log p(x | negative)``
  (transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor``, first of its processors);
* watermarking (``watermarking_config``): a "green list" of a quarter of the vocabulary, drawn from the
  previous token by a generator seeded with it, gets ``bias`` added (transformers' ``WatermarkLogitsProcessor``,
  after every other processor; torch's ``randperm`` draws, so the same tokens are green).

Both work on generate's NumPy arrays: ``processor(ids [B, T] int64, scores [B, vocab] float32)``.
"""
import warnings
from dataclasses import dataclass

import numpy as np

from ..tensor import Tensor, no_grad

__all__ = ["ClassifierFreeGuidance", "Watermark", "WatermarkingConfig"]


def _log_softmax(scores):
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class ClassifierFreeGuidance:
    """transformers' UnbatchedClassifierFreeGuidanceLogitsProcessor, step for step: the first call runs
    ``unconditional_ids`` (default: the last token of the ids it is given) with a mask of ones (or the one
    given); each later call appends the newest token -- alone on the cache, or, with ``use_cache=False``, to
    the whole unconditional sequence, recomputed."""

    def __init__(self, guidance_scale, model, unconditional_ids=None, unconditional_attention_mask=None,
                 use_cache=True):
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float, np.number)):
            raise ValueError(f"guidance_scale must be a number, got {guidance_scale!r}")
        self.guidance_scale, self.model, self.use_cache = guidance_scale, model, use_cache
        self.ids, self.mask = unconditional_ids, unconditional_attention_mask
        self.cache, self.first_pass = None, True

    def _unconditional_logits(self, ids):
        if self.first_pass:
            self.ids = ids[:, -1:] if self.ids is None else self.ids
            self.mask = np.ones_like(self.ids) if self.mask is None else self.mask
            step_ids, self.first_pass = self.ids, False
        else:
            self.mask = np.concatenate([self.mask, np.ones_like(ids[:, -1:])], axis=1)
            self.ids = np.concatenate([self.ids, ids[:, -1:]], axis=1) if not self.use_cache else ids[:, -1:]
            step_ids = self.ids
        with no_grad():
            out = self.model(input_ids=Tensor(step_ids, dtype=np.int64),
                             attention_mask=None if self.mask.all() else Tensor(self.mask, dtype=np.int64),
                             use_cache=self.use_cache, past_key_values=self.cache)
        self.cache = out.past_key_values if self.use_cache else None
        return out.logits[:, -1].cpu().numpy().astype(np.float32)

    def __call__(self, ids, scores):
        scores = _log_softmax(scores)
        if self.guidance_scale == 1:
            return scores
        unconditional = _log_softmax(self._unconditional_logits(ids))
        return (self.guidance_scale * (scores - unconditional) + unconditional).astype(np.float32)


@dataclass
class WatermarkingConfig:
    """transformers' ``WatermarkingConfig`` (its fields and defaults): ``generate(watermarking_config=...)``
    takes this, transformers' own object, or a dict of these fields."""
    greenlist_ratio: float = 0.25
    bias: float = 2.0
    hashing_key: int = 15485863
    seeding_scheme: str = "lefthash"
    context_width: int = 1


_WATERMARK_FIELDS = ("greenlist_ratio", "bias", "hashing_key", "seeding_scheme", "context_width")


def watermark_options(config):
    """The five fields of a watermarking config given as an object (transformers' or minilora's) or a dict.
    SynthID's (``ngram_len``, ``keys``) is another algorithm, refused by name."""
    if isinstance(config, dict):
        options = dict(config)
    else:
        options = {name: getattr(config, name) for name in _WATERMARK_FIELDS if hasattr(config, name)}
        options.update({name: getattr(config, name) for name in ("ngram_len", "keys") if hasattr(config, name)})
    if "ngram_len" in options:
        raise NotImplementedError("generate(watermarking_config=SynthIDTextWatermarkingConfig(...)) is not implemented "
                                  "in minilora (SynthID's tournament sampling); WatermarkingConfig's green lists are")
    unknown = sorted(set(options) - set(_WATERMARK_FIELDS))
    if unknown:
        raise ValueError(f"watermarking_config has no field(s) {unknown}; its fields are {list(_WATERMARK_FIELDS)}")
    return {**WatermarkingConfig().__dict__, **options}


class Watermark:
    """transformers' WatermarkLogitsProcessor. ``lefthash``: the green list is the first ``greenlist_ratio``
    of ``randperm(vocab)`` drawn from a generator seeded with ``hashing_key * previous token``; ``selfhash``:
    each of the 40 best candidates is kept green only if it is in the green list its own hash draws."""

    TABLE_SIZE = 1_000_003

    def __init__(self, vocab_size, greenlist_ratio=0.25, bias=2.0, hashing_key=15485863, seeding_scheme="lefthash",
                 context_width=1):
        if seeding_scheme not in ["selfhash", "lefthash"]:
            raise ValueError(f"seeding_scheme has to be one of [`selfhash`, `lefthash`], but found {seeding_scheme}")
        if greenlist_ratio >= 1.0 or greenlist_ratio <= 0.0:
            raise ValueError(f"greenlist_ratio has be in range between 0.0 and 1.0, exclusively. but found "
                             f"{greenlist_ratio}")
        self.vocab_size, self.greenlist_size = vocab_size, int(vocab_size * greenlist_ratio)
        self.bias, self.hash_key, self.seeding_scheme = bias, hashing_key, seeding_scheme
        self.context_width = context_width
        self._table = None

    def _fixed_table(self):
        """transformers' randperm(1_000_003) from a generator seeded with the hashing key (selfhash reads it)."""
        if self._table is None:
            from ..factories import randperm
            from ..random import Generator
            self._table = randperm(self.TABLE_SIZE, generator=Generator().manual_seed(self.hash_key)).numpy()
        return self._table

    def _seed(self, seq):
        seq = seq[-self.context_width:]
        if self.seeding_scheme == "selfhash":
            table = self._fixed_table()
            a = table[seq % self.TABLE_SIZE] + 1
            b = table[seq[-1] % self.TABLE_SIZE] + 1
            with np.errstate(over="ignore"):  # int64 products wrap, as torch's do
                seed = int((np.int64(self.hash_key) * a * b).min())
        else:
            seed = self.hash_key * int(seq[-1])
        return seed % (2 ** 64 - 1)

    def _greenlist(self, seq):
        from ..factories import randperm
        from ..random import Generator
        return randperm(self.vocab_size, generator=Generator().manual_seed(self._seed(seq))).numpy()[
            :self.greenlist_size]

    def _selfhash_greenlist(self, seq, scores):
        order = np.argsort(-scores, kind="stable")
        return np.array([token for token in order[:40]
                         if token in self._greenlist(np.concatenate([seq, [token]]))], dtype=np.int64)

    def __call__(self, ids, scores):
        if ids.shape[-1] < self.context_width:
            warnings.warn(f"`input_ids` should have at least `{self.context_width}` tokens but has {ids.shape[-1]}. "
                          "The seeding will be skipped for this generation step!")
            return scores
        out = scores.copy()
        for row, seq in enumerate(ids):
            green = self._selfhash_greenlist(seq, scores[row]) if self.seeding_scheme == "selfhash" else \
                self._greenlist(seq)
            out[row, green] = out[row, green] + np.float32(self.bias)
        return out
