"""Text generation: the model predicts one token, we append it, and ask again.

(In ``minilora.nn`` because a model's ``generate`` method calls it: the layer below the tools.
``minilora.generate`` re-exports it and adds the ``minilora generate`` command.)

    out = generate(model, [[1, 72, 105]], max_new_tokens=20)                    # greedy
    out = generate(model, ids, do_sample=True, temperature=0.8, top_k=50, top_p=0.9, seed=0)

Each step turns the logits of the last position into the next token:

* greedy (``do_sample=False``): the most likely token;
* beam search (``num_beams=n``): the n most likely sequences so far are kept and extended together,
  and the best finished one is returned (transformers' algorithm, step for step); with ``do_sample=True``
  the candidates are drawn rather than taken best first (beam sampling);
* sampling: divide the logits by ``temperature`` (< 1 sharper, > 1 flatter), keep the ``top_k``
  most likely tokens, keep the smallest set whose probabilities add up to ``top_p`` (nucleus
  sampling), and draw from what is left -- in that order, as transformers does.

With the KV cache (``use_cache=True``) the prompt is run once and every later step feeds only the one
new token; the keys and values of earlier positions come from the cache. Without it the whole
sequence is recomputed each step. Both give the same tokens; the cache makes a step O(T) not O(T^2).

A row that produced ``eos_token_id`` is finished: it gets ``pad_token_id`` from then on, and
generation stops when every row is finished (or after ``max_new_tokens``).

The options and their defaults are transformers 5's: 20 new tokens when no length is given (with its
warning), ``top_k=50`` and ``top_p=1.0`` when sampling, ``repetition_penalty``, ``num_return_sequences``
and a ``streamer`` (``TextStreamer`` prints the text as it is generated). So are its refusals:
``max_new_tokens`` < 1, or a ``max_length`` the prompt already fills, is a ValueError (nothing to
generate is a mistake, not an empty answer), and sampling options given to greedy decoding are
warned about (they would change nothing). A model may bring its own defaults, from its folder's
``generation_config.json`` (``model.generation_config``): they apply to every option a call leaves out.
"""
import inspect
import json
import os
import time
import unicodedata
import warnings
from dataclasses import dataclass

import numpy as np

from .. import ops
from .. import random as _random
from .. import std_sort
from ..tensor import Tensor, no_grad
from .outputs import ModelOutput

__all__ = ["generate", "sample_next_token", "warp_logits", "top_k_filter", "top_p_filter", "min_p_filter",
           "ban_repeated_ngrams", "apply_repetition_penalty",
           "TextStreamer", "TextIteratorStreamer", "GenerationConfig", "GenerateDecoderOnlyOutput",
           "GenerateBeamDecoderOnlyOutput", "DEFAULTS", "LogitsProcessor", "LogitsProcessorList", "StoppingCriteria",
           "StoppingCriteriaList", "MaxLengthCriteria", "MaxTimeCriteria", "EosTokenCriteria"]


def top_k_filter(logits, k, min_tokens_to_keep=1):
    """Set every logit below the ``k``-th largest of its row to -inf (ties at the k-th are kept).
    ``k`` None or 0 keeps every token (0 is transformers' way to turn top-k off). ``min_tokens_to_keep``
    (beam sampling's: the eos ids + 1) raises k to it, as transformers' TopKLogitsWarper."""
    if k is None or (isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)) and k == 0):
        return logits
    if not isinstance(k, (int, np.integer)) or isinstance(k, (bool, np.bool_)) or k < 1:
        raise ValueError(f"top_k must be an integer >= 0 (0: off), got {k!r}")
    k = max(k, min_tokens_to_keep)
    if k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k, axis=-1)[..., -k:].min(axis=-1, keepdims=True)
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits, p, min_tokens_to_keep=1):
    """Keep, per row, the most likely tokens until their probabilities reach ``p``; -inf the rest.

    A token is kept if the probability of all tokens more likely than it is still below ``p``; the most
    likely ``min_tokens_to_keep`` are always kept (so ``p=0`` keeps just the best one, as transformers).
    """
    if p is None:
        return logits
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.number)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"top_p must be a number in [0, 1], got {p!r}")
    if p == 1.0:
        return logits
    order = np.argsort(-logits, axis=-1, kind="stable")
    sorted_logits = np.take_along_axis(logits, order, axis=-1)
    probs = _softmax(sorted_logits)
    before = np.cumsum(probs, axis=-1) - probs  # probability of the strictly more likely tokens
    remove_sorted = before >= p
    remove_sorted[..., :min_tokens_to_keep] = False  # the most likely token(s) stay (transformers' rule)
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, -np.inf, logits)


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def min_p_filter(logits, min_p):
    """Keep, per row, the tokens at least ``min_p`` times as likely as the most likely one; -inf the
    rest (transformers' MinPLogitsWarper: the bar moves with the model's confidence). None: off."""
    if min_p is None:
        return logits
    if isinstance(min_p, (bool, np.bool_)) or not isinstance(min_p, (int, float, np.number)) or not 0 <= min_p <= 1:
        raise ValueError(f"`min_p` has to be a float in the [0, 1] interval, but is {min_p}")
    probs = _softmax(logits)
    return np.where(probs < min_p * probs.max(axis=-1, keepdims=True), -np.inf, logits)


def ban_repeated_ngrams(logits, ids, n):
    """-inf for every token that would complete an ``n``-gram already present in its row (prompt and
    padding included), as transformers' NoRepeatNGramLogitsProcessor. ``n`` 0 or None: off."""
    if not n:
        return logits
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"`ngram_size` has to be a strictly positive integer, but is {n}")
    length = ids.shape[1]
    if length + 1 < n:
        return logits
    logits = logits.copy()
    for row, seq in enumerate(ids.tolist()):
        prefix = seq[length - n + 1:]  # the last n - 1 tokens: an n-gram they start would repeat
        banned = {seq[i + n - 1] for i in range(length - n + 1) if seq[i:i + n - 1] == prefix}
        logits[row, sorted(banned)] = -np.inf
    return logits


def typical_filter(logits, mass):
    """Locally typical sampling (transformers' TypicalLogitsWarper): keep, per row, the tokens whose
    surprise is closest to the row's entropy until their probabilities reach ``mass``. 1.0 or None: off."""
    if mass is None or mass == 1.0:
        return logits
    if isinstance(mass, (bool, np.bool_)) or not isinstance(mass, (int, float, np.number)) or not 0 < mass < 1:
        raise ValueError(f"`typical_p` has to be a float > 0 and < 1, but is {mass}")
    log_probs = _log_softmax(logits)
    probs = np.exp(log_probs)
    entropy = -np.nansum(log_probs * probs, axis=-1, keepdims=True)
    distance = np.abs(-log_probs - entropy)
    order = np.argsort(distance, axis=-1, kind="stable")
    sorted_distance = np.take_along_axis(distance, order, axis=-1)
    cumulative = np.cumsum(_softmax(np.take_along_axis(logits, order, axis=-1)), axis=-1)
    last = np.minimum((cumulative < mass).sum(axis=-1, keepdims=True), logits.shape[-1] - 1)
    remove_sorted = sorted_distance > np.take_along_axis(sorted_distance, last, axis=-1)
    remove_sorted[..., 0] = False  # the most typical token stays (min_tokens_to_keep=1)
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, -np.inf, logits)


def epsilon_filter(logits, epsilon):
    """Truncation sampling (transformers' EpsilonLogitsWarper): drop tokens less likely than ``epsilon``;
    the most likely token always stays. 0 or None: off, as transformers (which adds it only inside (0, 1))."""
    if epsilon is None or not 0.0 < epsilon < 1.0:
        return logits
    return _drop_below(logits, _softmax(logits), epsilon)


def eta_filter(logits, epsilon):
    """Eta sampling (transformers' EtaLogitsWarper): as epsilon_filter, with the bar
    ``min(epsilon, sqrt(epsilon) * exp(-entropy))`` lowered for uncertain (high-entropy) rows."""
    if epsilon is None or not 0.0 < epsilon < 1.0:
        return logits
    probs = _softmax(logits)
    entropy = -np.nansum(_log_softmax(logits) * probs, axis=-1, keepdims=True)
    return _drop_below(logits, probs, np.minimum(epsilon, np.sqrt(epsilon) * np.exp(-entropy)))


def _drop_below(logits, probs, bar):
    keep_best = logits >= logits.max(axis=-1, keepdims=True)  # min_tokens_to_keep=1
    return np.where((probs < bar) & ~keep_best, -np.inf, logits)


def top_h_filter(logits, top_h):
    """Top-H sampling (transformers 5's TopHLogitsWarper): among the 100 most likely tokens, keep them in
    order of probability while their summed entropy terms -p log p stay within ``top_h`` times the entropy
    of those 100 (renormalised); the most likely token always stays. None: off. float32, with minilora's
    torch-ordered logsumexp / softmax / sum; the log is NumPy's, where torch's is SLEEF's (within 1 ulp), so
    at ``top_h=1`` -- where the cumulative entropy meets its total among the least likely tokens -- about
    1 row in 10 keeps one tail token more or less than transformers (none in 1860 random rows below 1)."""
    if top_h is None:
        return logits
    if isinstance(top_h, (bool, np.bool_)) or not isinstance(top_h, (int, float, np.number)) or not 0 < top_h <= 1:
        raise ValueError("`top_h` must be in the range (0, 1].")
    n = min(100, logits.shape[-1])
    order = np.argsort(-logits, axis=-1, kind="stable")[:, :n]
    top = Tensor(np.take_along_axis(logits, order, axis=-1).astype(np.float32))
    normalized = top - top.logsumexp(-1, keepdim=True)  # Categorical(logits=top): its logits, probs, entropy
    probs = normalized.softmax(-1)
    floor = float(np.finfo(np.float32).min)
    tau = -(normalized.clamp(min=floor) * probs).sum(-1) * top_h
    cumulative = (-probs * probs.log()).cumsum(-1).numpy()
    keep_sorted = cumulative <= tau.numpy()[:, None]
    keep_sorted[:, 0] = True
    keep = np.zeros(logits.shape, dtype=bool)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return np.where(keep, logits, -np.inf).astype(logits.dtype, copy=False)


def warp_logits(logits, temperature=1.0, top_k=None, top_p=None, min_p=None, typical_p=None, epsilon_cutoff=None,
                eta_cutoff=None, min_tokens_to_keep=1, top_h=None):
    """The sampling filters in transformers' order: divide by ``temperature``, then top-h, top-k, top-p,
    min-p, typical-p, epsilon and eta. (What ``output_scores`` returns for a sampled step.)
    ``min_tokens_to_keep`` > 1 (beam sampling) is taken by top-k and top-p; generate refuses the others
    with it."""
    if not temperature > 0:
        raise _temperature_error(temperature)
    logits = top_h_filter(logits / temperature, top_h)
    logits = top_p_filter(top_k_filter(logits, top_k, min_tokens_to_keep), top_p, min_tokens_to_keep)
    logits = min_p_filter(logits, min_p)
    return eta_filter(epsilon_filter(typical_filter(logits, typical_p), epsilon_cutoff), eta_cutoff)


def _temperature_error(temperature):
    """transformers' TemperatureLogitsWarper's refusal, in its words."""
    zero = isinstance(temperature, float) and temperature == 0.0
    hint = " If you're looking for greedy decoding strategies, set `do_sample=False`." if zero else ""
    return ValueError(f"`temperature` (={temperature}) has to be a strictly positive float, otherwise your next token "
                      f"scores will be invalid.{hint}")


def sample_next_token(logits, do_sample=False, temperature=1.0, top_k=None, top_p=None, rng=None):
    """Next token ids [B] from the last position's logits [B, vocab] (a NumPy array)."""
    if not do_sample:
        return logits.argmax(axis=-1)
    return _draw(warp_logits(logits, temperature, top_k, top_p), rng)


def _draw(scores, rng=None):
    """One token per row, with the probabilities softmax(scores) (-inf: never)."""
    probs = _softmax(scores)
    if not np.isfinite(probs).all():  # torch.multinomial's refusal, which transformers' sampling meets too
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0: a row's scores are all "
                           "-inf (every token filtered out or suppressed, e.g. a forced token that is also "
                           "suppressed) or nan, so there is nothing to sample from")
    if isinstance(rng, np.random.Generator):  # (a NumPy generator, the server's: inverse-CDF sampling)
        cdf = np.cumsum(probs, axis=-1)
        u = rng.random((scores.shape[0], 1)) * cdf[:, -1:]  # one draw per row
        return np.minimum((cdf < u).sum(axis=-1), scores.shape[-1] - 1)
    # transformers' torch.multinomial(probs, 1): torch's draw, from the global generator (or seed='s)
    from ..factories import _draw_by_exponential_race
    return _draw_by_exponential_race(_random.resolve(rng), probs, 1)[:, 0]


DEFAULT_NEW_TOKENS = 20  # transformers 5's default when no length is given (4.x counted the prompt in)
GENERATION_CONFIG_NAME = "generation_config.json"

# transformers' defaults for the options generate() implements: used when neither the call nor the
# model's generation_config sets one (GenerationConfig._get_default_generation_params).
DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": None,
            "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "sequence_bias": None, "bad_words_ids": None,
            "suppress_tokens": None, "begin_suppress_tokens": None, "forced_eos_token_id": None,
            "stop_strings": None, "num_beams": 1, "length_penalty": 1.0, "early_stopping": False,
            "num_return_sequences": 1, "use_cache": True, "return_dict_in_generate": False, "output_scores": False,
            "output_logits": False, "output_hidden_states": False, "output_attentions": False, "top_h": None,
            "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
            "encoder_repetition_penalty": 1.0, "renormalize_logits": False, "forced_bos_token_id": None,
            "exponential_decay_length_penalty": None, "max_time": None, "remove_invalid_values": False,
            "encoder_no_repeat_ngram_size": 0}
# The options above that generate() takes through **kwargs (transformers' rarer logits processors).
_SAMPLING_OPTIONS = ("top_h", "typical_p", "epsilon_cutoff", "eta_cutoff")  # warp_logits' rarer filters
_PROCESSOR_OPTIONS = _SAMPLING_OPTIONS + ("encoder_repetition_penalty", "renormalize_logits", "forced_bos_token_id",
                                          "exponential_decay_length_penalty", "remove_invalid_values",
                                          "encoder_no_repeat_ngram_size")
_LENGTHS_AND_TOKENS = ("max_length", "max_new_tokens", "min_length", "min_new_tokens", "eos_token_id", "pad_token_id",
                       "bos_token_id")
# generation_config.json entries that change nothing here: bookkeeping, output formats left at their
# default, beam-search settings (beams themselves are refused below), assisted decoding.
_IGNORED = {"_from_model_config", "transformers_version", "cache_implementation",
            "decoder_start_token_id",
            "num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold",
            "assistant_lookbehind", "target_lookbehind", "is_assistant", "trust_remote_code", "disable_compile",
            "compile_config", "prefill_chunk_size",
            "cache_config", "max_cache_len",  # (the cache's own settings: the same keys and values either way)
            "low_memory"}  # beam and contrastive search's memory saver (refused with beams, as transformers 5)
# Options generate() does not implement, at the value that turns them off (any other value is refused).
_OFF = {"prefix_allowed_tokens_fn": None, "synced_gpus": None, "custom_generate": None, "assistant_tokenizer": None,
        "continuous_batching_config": None}
# Options that pick another decoding method, or none, depending on the others (transformers'
# get_generation_mode): _check_decoding_method decides whether each is unused, refused or transformers' error.
_METHOD_OPTIONS = ("num_beam_groups", "diversity_penalty", "penalty_alpha", "dola_layers", "constraints",
                   "force_words_ids", "use_mtp", "assistant_early_exit", "speculation_type", "token_healing")
# transformers 5 moved these decoding methods to Hub repositories: without trust_remote_code=True it refuses
# them (its ValueError), with it it downloads and runs the repository's code, which minilora never does.
_HUB_METHODS = {"Constrained Beam Search": "transformers-community/constrained-beam-search",
                "Contrastive Search": "transformers-community/contrastive-search",
                "Group Beam Search": "transformers-community/group-beam-search",
                "Dola Generation": "transformers-community/dola"}
# Options generate() implements that come as keywords (the call's) or from a generation config (the model's):
# classifier-free guidance, watermarking and the candidate generators of assisted decoding (nn/assisted.py).
_GUIDED_OPTIONS = {"guidance_scale": None, "watermarking_config": None, "prompt_lookup_num_tokens": None,
                   "max_matching_ngram_size": None, "assistant_ensemble_weight": None}
# generate()'s own arguments for them (never in a config: _GENERATE_ARGUMENTS)
_GUIDED_ARGUMENTS = ("assistant_model", "negative_prompt_ids", "negative_prompt_attention_mask")
# cache_implementation values whose cache changes the numbers or the answer's form: refused by name (the
# others hold the same keys and values as minilora's cache, so the same tokens come out)
_REFUSED_CACHES = {"quantized": "a KV cache quantized by optimum-quanto (other numbers than a float cache)",
                   "paged": "continuous batching (transformers then returns another kind of answer)"}


class _Default:
    """An option not passed to generate(): the model's ``generation_config`` decides, else transformers'
    default (``DEFAULTS``). (Not None: ``top_k=None`` passed on purpose means "no top-k filter".)"""

    def __repr__(self):
        return "DEFAULT"


DEFAULT = _Default()


class GenerationConfig:
    """A model's own generation defaults (transformers' ``model.generation_config``), read from the
    model folder's ``generation_config.json``: a chat model's file often asks for sampling
    (``do_sample``, ``temperature``, ``top_p``), another end-of-turn id in ``eos_token_id``, or a
    ``max_length``. ``generate()`` uses them for every option the call does not pass, as transformers
    does. Set one like an attribute (``model.generation_config.pad_token_id = 0``); unset ones are None.
    As transformers, a config is validated when made (``validate``: wrong values raise, flags that change
    nothing are warned about) and refused by ``save_pretrained`` while it has issues, unless unchanged since
    it was loaded; ``save_pretrained`` / ``from_pretrained`` read and write transformers' file."""

    def __init__(self, **options):
        self._set(options)
        self.validate()

    @classmethod
    def from_model_config(cls, model_config):
        """transformers' ``GenerationConfig.from_model_config``: the special-token ids a model's config sets
        (a config, or config.json's dict, which may also hold an older checkpoint's generation options: those
        are taken too), copied when the model is made or loaded from a folder without generation_config.json.
        generate() reads them here, never the model config again: ``model.config.eos_token_id = 7`` after that
        changes nothing, as in transformers; set ``model.generation_config.eos_token_id`` instead."""
        def get(name):
            return model_config.get(name) if isinstance(model_config, dict) else getattr(model_config, name, None)
        options = {name: get(name) for name in (*_COPIED_FROM_MODEL_CONFIG, *MODEL_CONFIG_PARAMETERS,
                                                 *_FLAGS_FROM_MODEL_CONFIG) if get(name) is not None}
        if any(options.get(flag) for flag in _EXTRA_OUTPUT_FLAGS):  # (transformers: asking for an output means
            options["return_dict_in_generate"] = True  # the dict that holds it)
        return cls(**options, _from_model_config=True)  # (the mark transformers writes in the file too)

    @classmethod
    def _unchecked(cls, **options):
        """A config built by generate() itself (the model's merged with the call's): validated where it came from."""
        config = cls.__new__(cls)
        config._set(options)
        return config

    def _set(self, options):
        options = dict(options)
        for name in (*DEFAULTS, *_LENGTHS_AND_TOKENS):
            setattr(self, name, options.pop(name, None))
        self.other = options  # everything else in the file, checked when generating (see _check_unimplemented)
        self._as_loaded = None

    @classmethod
    def from_pretrained(cls, folder, config_file_name=None, return_unused_kwargs=False, **kwargs):
        """The folder's generation_config.json (or ``config_file_name`` in it), with ``kwargs`` set on top
        (``from_pretrained(folder, top_k=1)``), as transformers; ``return_unused_kwargs``: ``(config, {})`` (every
        keyword is kept as an option). A folder without the file is transformers' OSError (a model's loader
        falls back to its config's ids itself: ``LlamaForCausalLM.from_pretrained``)."""
        from ..checkpoint import load_json, naming_the_file
        name = GENERATION_CONFIG_NAME if config_file_name is None else os.fspath(config_file_name)
        path = os.path.join(os.fspath(folder), name)
        if not os.path.isfile(path):
            raise OSError(f"{os.fspath(folder)} does not appear to have a file named {name} "
                          "(minilora reads a local folder; it does not download from the Hugging Face Hub)")
        data = load_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object of option: value, got a {type(data).__name__}")
        with naming_the_file(path):
            config = cls.from_dict(data, **kwargs)
        config._as_loaded = cls._unchecked(**data).to_dict()  # saved back unchanged, its issues are only warned about
        return (config, {}) if return_unused_kwargs else config

    @classmethod
    def from_dict(cls, config_dict, return_unused_kwargs=False, **kwargs):
        """transformers' ``from_dict``: the options of ``config_dict`` (generation_config.json's), ``kwargs`` set on
        top; ``return_unused_kwargs``: ``(config, {})`` (every keyword is kept as an option, as there)."""
        config = cls(**{**config_dict, **kwargs})
        return (config, {}) if return_unused_kwargs else config

    def validate(self, strict=False):
        """transformers' checks: a wrong value (``max_new_tokens=0``, ``early_stopping="x"``, greedy
        ``num_return_sequences=2``, a ``streamer`` in the config...) is a ValueError; a flag that would change
        nothing (``temperature`` without ``do_sample=True``, ``length_penalty`` without beams, ``output_scores``
        without ``return_dict_in_generate``) is warned about -- or, with ``strict`` (saving), a ValueError."""
        issues = _config_issues(self)
        if not issues:
            return
        details = "\n".join(f"- `{name}`: {issue}" for name, issue in issues.items())
        if strict:
            raise ValueError("GenerationConfig is invalid: \n" + details)
        warnings.warn(f"The following generation flags are not valid and may be ignored: {list(issues)}.\n{details}")

    def update(self, defaults_only=False, allow_custom_entries=False, **kwargs):
        """transformers' ``update``: each keyword that names a generation option is set (with ``defaults_only``,
        only where the option is still unset); the others are returned, unused -- or, with
        ``allow_custom_entries``, kept too. The config is validated again."""
        fields = (*DEFAULTS, *_LENGTHS_AND_TOKENS)
        options = {*fields, *_OFF, *_METHOD_OPTIONS, *_IGNORED, *_PROCESSOR_OPTIONS, *_GUIDED_OPTIONS, *self.other}
        used = [key for key, value in kwargs.items()
                if (key in options and (not defaults_only or self._option(key) is None))
                or (allow_custom_entries and key not in options)]
        for key in used:
            if key in fields:
                setattr(self, key, kwargs[key])
            else:
                self.other[key] = kwargs[key]
        self.validate()
        return {key: value for key, value in kwargs.items() if key not in used}

    def _option(self, name):
        return getattr(self, name) if name in (*DEFAULTS, *_LENGTHS_AND_TOKENS) else self.other.get(name)

    def __setattr__(self, name, value):
        """An option outside the named fields (``config.guidance_scale = 1.5``) is kept with the file's others,
        where generate() reads (or refuses) it -- never as a loose attribute nothing reads."""
        if name.startswith("_") or name == "other" or name in DEFAULTS or name in _LENGTHS_AND_TOKENS:
            object.__setattr__(self, name, value)
        else:
            self.other[name] = value

    def __getattr__(self, name):
        """transformers' other options read as attributes: their value in ``other``, None while unset."""
        other = self.__dict__.get("other")
        if other is None or name.startswith("_"):
            raise AttributeError(name)
        if name in other:
            return other[name]
        if name in _OFF or name in _METHOD_OPTIONS or name in _IGNORED or name in _GUIDED_OPTIONS:
            return None
        raise AttributeError(f"'GenerationConfig' object has no attribute '{name}'")

    def to_dict(self):
        options = {name: getattr(self, name) for name in (*DEFAULTS, *_LENGTHS_AND_TOKENS)}
        return {**{k: v for k, v in options.items() if v is not None}, **self.other}

    def save_pretrained(self, save_directory, config_file_name=None, push_to_hub=False):
        """Write ``generation_config.json`` (or ``config_file_name``) in ``save_directory`` (made if missing), as
        ``to_json_file`` writes it. As transformers, a config with issues is refused (ValueError naming them),
        unless it is unchanged since it was loaded. ``push_to_hub`` is refused (a local folder only)."""
        if push_to_hub:
            raise NotImplementedError("GenerationConfig.save_pretrained(push_to_hub=True): minilora saves to a local "
                                      "folder only")
        try:
            self.validate(strict=self._as_loaded != self.to_dict())
        except ValueError as exc:
            raise ValueError(str(exc) + "\n\nFix these issues to save the configuration.") from None
        if os.path.isfile(save_directory):
            raise ValueError(f"save_pretrained needs a directory, but {save_directory!r} is a file")
        from ..checkpoint import make_save_folder
        make_save_folder(save_directory)
        name = GENERATION_CONFIG_NAME if config_file_name is None else os.fspath(config_file_name)
        self.to_json_file(os.path.join(os.fspath(save_directory), name), keys_to_pop=["compile_config"])

    def to_diff_dict(self):
        """transformers' ``to_diff_dict``: the options set (transformers' defaults are unset) and the writer's
        version, as the file holds them."""
        return {**self.to_dict(), "transformers_version": writer_version()}

    def to_json_string(self, use_diff=True, ignore_metadata=False, keys_to_pop=None):
        """generation_config.json's text, as transformers writes it: keys sorted, two-space indent, a final newline
        (``ignore_metadata``: without ``_from_model_config`` and ``transformers_version``). ``use_diff=False``, every
        option with transformers' defaults, is refused: minilora keeps only the options it knows."""
        if not use_diff:
            raise NotImplementedError("GenerationConfig.to_json_string(use_diff=False): minilora writes the options "
                                      "set (transformers' use_diff=True), not all of transformers' defaults")
        config = self.to_diff_dict()
        for key in [*(keys_to_pop or ()), *(_METADATA if ignore_metadata else ())]:
            config.pop(key, None)
        return json.dumps(_string_keys(config), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path, use_diff=True, keys_to_pop=None):
        """``to_json_string`` written to ``json_file_path``, whole (a temporary file renamed into place)."""
        from ..checkpoint import atomic_write
        text = self.to_json_string(use_diff=use_diff, keys_to_pop=keys_to_pop)
        with atomic_write(json_file_path, "w") as f:
            f.write(text)

    def __eq__(self, other):
        """The same options, whatever wrote them (as transformers: its metadata is left out)."""
        def options(config):
            return {k: v for k, v in config.to_dict().items() if k not in _METADATA}
        return isinstance(other, GenerationConfig) and options(self) == options(other)

    __hash__ = None

    def __repr__(self):
        """What ``print(model.generation_config)`` shows in transformers: the class and its JSON, metadata left out."""
        return f"{type(self).__name__} {self.to_json_string(ignore_metadata=True)}"


# generation_config.json's bookkeeping, which transformers' to_json_string(ignore_metadata=True) and repr leave out
_METADATA = ("_from_model_config", "transformers_version")


def _string_keys(value):
    """JSON's keys are strings: transformers writes a dict's other keys (sequence_bias's tuples) as str() of them."""
    if isinstance(value, dict):
        return {str(key): _string_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_string_keys(item) for item in value]
    return value


# The ids transformers copies from the model's config into its generation_config when the model is made
# (GenerationConfig.from_model_config); None there (``model.generation_config.eos_token_id = None``) is none.
_COPIED_FROM_MODEL_CONFIG = ("bos_token_id", "eos_token_id", "pad_token_id")
# The model config's own generation flags, copied with the ids (transformers copies every GenerationConfig field the
# model config has: a Llama's are these and the ids), so generation_config.json holds them as transformers' does,
# and a model made with output_hidden_states=True generates transformers' dict with the hidden states.
_FLAGS_FROM_MODEL_CONFIG = ("use_cache", "output_attentions", "output_hidden_states")
_EXTRA_OUTPUT_FLAGS = ("output_attentions", "output_hidden_states", "output_scores", "output_logits")


def writer_version():
    """generation_config.json's ``transformers_version``: the library that wrote the file, as transformers writes its
    own version there (and as adapter_config.json's ``peft_version`` names minilora); nothing reads it back."""
    from .. import __version__
    return f"minilora-{__version__}"
# Generation options an older model config may carry (transformers 5's GenerationConfig._get_default_generation_params
# but use_cache): a config drops them when it is made (config.json's go to the generation_config of a folder without
# generation_config.json), and one set on model.config later is refused by generate and save_pretrained.
MODEL_CONFIG_PARAMETERS = (
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "temperature", "top_k", "top_p",
    "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
    "bad_words_ids", "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "epsilon_cutoff", "eta_cutoff", "encoder_repetition_penalty", "num_assistant_tokens",
    "num_assistant_tokens_schedule", "assistant_confidence_threshold", "assistant_lookbehind", "target_lookbehind",
    "num_beam_groups", "diversity_penalty")


def generation_parameters(config):
    """The generation options set on a model config (transformers' ``config._get_generation_parameters()``)."""
    extra = getattr(config, "extra", None) or {}
    return {name: extra[name] for name in MODEL_CONFIG_PARAMETERS if extra.get(name) is not None}


def _refuse_generation_parameters(config):
    """transformers 5's ValueError for ``model.config.max_length = 50`` and the like (legacy: it read them once)."""
    found = generation_parameters(config)
    if found:
        raise ValueError("You have modified the pretrained model configuration to control generation We detected "
                         f"the following values set - {found}. This strategy to control generation is not "
                         "supported anymore. Please use and modify `model.generation_config` (see https://"
                         "huggingface.co/docs/transformers/generation_strategies#default-text-generation-configuration )")


def _special_token(name, value, own, config):
    """The call's id (None passed on purpose: none), else the model's generation_config's (copied from its
    config when the model was made, as transformers'). Only a model without a generation_config (not one of
    minilora's) has its config's id read here."""
    if value is not DEFAULT:
        return _plain_ids(value)
    return getattr(own, name) if own is not None else getattr(config, name, None)


def _plain_ids(value):
    """A token id (or ids) given as a tensor or an array, ``eos_token_id=torch.tensor([2, 7])``, as Python
    ints: transformers makes a tensor of whatever it is given there, so these are its ids too (before: a
    ValueError from ``int()``). Lists and ints pass as they are."""
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, (list, tuple)) else value


# generate()'s own arguments, which a GenerationConfig must not hold (transformers' ValueError)
_GENERATE_ARGUMENTS = ("logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn", "synced_gpus",
                       "assistant_model", "streamer", "negative_prompt_ids", "negative_prompt_attention_mask")
_SAMPLING_FLAGS = {"temperature": 1.0, "top_p": 1.0, "min_p": None, "top_h": None, "typical_p": 1.0, "top_k": 50,
                   "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}  # each at the value that changes nothing
_EXTRA_OUTPUTS = ("output_attentions", "output_hidden_states", "output_scores", "output_logits")
# transformers' ALL_CACHE_IMPLEMENTATIONS and "paged", the names its validate() takes
_CACHE_IMPLEMENTATIONS = ("static", "offloaded_static", "sliding_window", "hybrid", "hybrid_chunked", "offloaded_hybrid",
                          "offloaded_hybrid_chunked", "dynamic", "offloaded", "quantized", "paged")


def _config_issues(config):
    """transformers' GenerationConfig.validate: raises for wrong values, returns {flag: why it changes nothing}."""
    def get(name):
        return getattr(config, name) if name in DEFAULTS or name in _LENGTHS_AND_TOKENS else config.other.get(name)
    for name in _GENERATE_ARGUMENTS:
        if name in config.other:
            raise ValueError(f"Argument `{name}` is not a valid argument of `GenerationConfig`. It should be passed to "
                             "`generate()` (or a pipeline) directly.")
    _check_option_types(get)
    if get("early_stopping") not in (None, True, False, "never"):
        raise ValueError(f"`early_stopping` must be a boolean or 'never', but is {get('early_stopping')}.")
    implementation = get("cache_implementation")  # (ignored by minilora's generate, refused when no cache's name)
    if implementation is not None and implementation not in _CACHE_IMPLEMENTATIONS:
        raise ValueError(f"Invalid `cache_implementation` ({implementation}). Choose one of: {_CACHE_IMPLEMENTATIONS}")
    if get("max_new_tokens") is not None and get("max_new_tokens") <= 0:
        raise ValueError(f"`max_new_tokens` must be greater than 0, but is {get('max_new_tokens')}.")
    beams, returned = get("num_beams"), get("num_return_sequences")
    if returned is not None and returned > 1:
        if beams in (None, 1) and not get("do_sample"):
            raise ValueError("Greedy methods (do_sample != True) without beam search do not support "
                             f"`num_return_sequences` different than 1 (got {returned}).")
        if beams not in (None, 1) and returned > beams:
            raise ValueError(f"`num_return_sequences` ({returned}) has to be smaller or equal to `num_beams` "
                             f"({beams}).")
    suppressed = set(get("suppress_tokens") or ())
    for name in ("forced_bos_token_id", "forced_eos_token_id"):
        forced = get(name)
        forced = set() if forced is None else {forced} if isinstance(forced, int) else set(forced)
        if suppressed and forced and forced <= suppressed:
            raise ValueError(f"Every token in `{name}` ({sorted(forced)}) is also in `suppress_tokens`. Forcing a "
                             "token while suppressing it sets all logits to `-inf` at the forcing step.")
    issues = {}
    if get("pad_token_id") is not None and get("pad_token_id") < 0:
        issues["pad_token_id"] = f"`pad_token_id` should be positive but got {get('pad_token_id')}."
    if get("do_sample") is not True:
        for name, neutral in _SAMPLING_FLAGS.items():
            if get(name) is not None and get(name) != neutral:
                issues[name] = (f"`do_sample` is not set to `True`. However, `{name}` is set to `{get(name)}` -- this "
                                "flag is only used in sample-based generation modes. You should set `do_sample=True` "
                                f"or unset `{name}`.")
    if beams in (None, 1):
        for name, value in (("early_stopping", get("early_stopping")), ("length_penalty", get("length_penalty"))):
            if value is not None and value is not False and not (name == "length_penalty" and value == 1.0):
                issues[name] = (f"`num_beams` is set to {beams}. However, `{name}` is set to `{value}` -- this flag "
                                f"is only used in beam-based generation modes. You should set `num_beams>1` or unset "
                                f"`{name}`.")
    if get("use_cache") is False:
        for name in ("cache_implementation", "cache_config"):
            if get(name) is not None:
                issues[name] = (f"You have not set `use_cache` to `True`, but {name} is set to {get(name)}."
                                f"{name} will have no effect.")
    if get("return_dict_in_generate") is not True:
        for name in _EXTRA_OUTPUTS:
            if get(name) is True:
                issues[name] = (f"`return_dict_in_generate` is NOT set to `True`, but `{name}` is. When "
                                f"`return_dict_in_generate` is not `True`, `{name}` is ignored.")
    return issues


# The JSON type of each option transformers documents (a file written by hand may hold "5" or "true"):
# a string where a number goes failed as Python's "'<=' not supported between 'str' and 'int'"; a string
# flag counted as set ("false" is true: do_sample="false" sampled), a string eos id never matched.
_WHOLE_OPTIONS = ("max_length", "max_new_tokens", "min_length", "min_new_tokens", "num_beams", "num_return_sequences",
                  "top_k", "no_repeat_ngram_size")
_TOKEN_OPTIONS = ("pad_token_id", "bos_token_id", "forced_bos_token_id")
_TOKENS_OPTIONS = ("eos_token_id", "forced_eos_token_id")  # (one id, or a list of them)
_TOKEN_LIST_OPTIONS = ("suppress_tokens", "begin_suppress_tokens")  # (a list of ids)
_NUMBER_OPTIONS = ("temperature", "top_p", "min_p", "typical_p", "repetition_penalty", "length_penalty",
                   "epsilon_cutoff", "eta_cutoff", "encoder_repetition_penalty", "max_time")
_FLAG_OPTIONS = ("do_sample", "use_cache", "return_dict_in_generate", "output_scores", "output_logits",
                 "output_hidden_states", "output_attentions", "renormalize_logits")


def _check_option_types(get):
    """A TypeError naming the option whose value is of the wrong JSON type (None: unset, always fine)."""
    def whole(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    rules = [(_WHOLE_OPTIONS, whole, "an integer"),
             (_TOKEN_OPTIONS, whole, "a token id (an integer)"),
             (_TOKENS_OPTIONS, lambda v: whole(v) or (isinstance(v, list) and all(map(whole, v))),
              "a token id (an integer) or a list of token ids"),
             (_TOKEN_LIST_OPTIONS, lambda v: isinstance(v, (list, tuple)) and all(map(whole, v)),
              "a list of token ids"),
             (("stop_strings",), lambda v: isinstance(v, str) or (isinstance(v, (list, tuple)) and
                                                                  all(isinstance(t, str) for t in v)),
              "a string or a list of strings"),
             (_NUMBER_OPTIONS, lambda v: whole(v) or isinstance(v, (float, np.floating)), "a number"),
             (_FLAG_OPTIONS, lambda v: isinstance(v, (bool, np.bool_)), "true or false (a boolean, not a string)")]
    for names, fits, wanted in rules:
        for name in names:
            value = get(name)
            if value is not None and not fits(value):
                raise TypeError(f"generation option `{name}` is {value!r} ({type(value).__name__}); "
                                f"it must be {wanted}")


def _the_prompt(input_ids, inputs, bos_token_id):
    """The prompt ids, as ``input_ids`` or under transformers' own name for generate's first argument,
    ``inputs`` (``model.generate(inputs=ids)``); both at once is transformers' ValueError. Neither: one
    row holding the bos token, as transformers starts an unconditioned sequence."""
    if inputs is not None and input_ids is not None:
        raise ValueError(f"`inputs`: {inputs}` were passed alongside `input_ids` which is not allowed. Make sure to "
                         "either pass `inputs` or `input_ids`.")
    prompt = input_ids if input_ids is not None else inputs
    if prompt is None:
        if bos_token_id is None:
            raise ValueError("`bos_token_id` has to be defined when no `input_ids` are provided.")
        prompt = [[bos_token_id]]
    return prompt


def _bos_id(generation_config, config):
    return _special_token("bos_token_id", DEFAULT, generation_config, config)


def _check_call_options(options):
    """The other keywords transformers' generate() takes: accepted at the value that turns them off, refused
    by name otherwise (never ignored); an unknown one gets transformers' own ValueError (a typo such as
    ``max_new_token=5`` must not silently fall back to the default length)."""
    unknown = [name for name in options if name not in _OFF and name not in _IGNORED]
    if unknown:
        raise ValueError(f"The following `model_kwargs` are not used by the model: {unknown} (note: typos in the "
                         "generate arguments will also show up in this list)")
    for name, value in options.items():
        if name in _OFF and value is not None and not (value is _OFF[name] or value == _OFF[name]):
            raise NotImplementedError(f"generate({name}={value!r}) is not implemented in minilora (transformers "
                                      f"would apply it); leave {name} at {_OFF[name]!r}")


def _custom_entry(name, generation_config):
    """A custom entry of the config (``update(allow_custom_entries=True, note=...)``): transformers' generate takes
    it as a keyword too (it updates the config) and reads it nowhere."""
    return generation_config is not None and name in generation_config.other and name not in _OFF


def _method_options(kwargs, own):
    """The options of _METHOD_OPTIONS the call sets (taken out of ``kwargs``), else the model's config's."""
    return {name: kwargs.pop(name) if name in kwargs else own.other.get(name) if own is not None else None
            for name in _METHOD_OPTIONS}


def _hub_method(options, num_beams, do_sample, top_k):
    """transformers' GenerationConfig.get_generation_mode, for the methods it moved to the Hub: their name, or
    None when generate decodes greedily, by sampling or by beam search -- the option that would pick another
    method then changes nothing (penalty_alpha while sampling, num_beam_groups without beams)."""
    if options["constraints"] is not None or options["force_words_ids"] is not None:
        return "Constrained Beam Search"
    if num_beams == 1 and not do_sample and (top_k or 0) > 1 and (options["penalty_alpha"] or 0) > 0:
        return "Contrastive Search"
    if num_beams > 1 and (options["num_beam_groups"] or 1) > 1:
        return "Group Beam Search"
    if options["dola_layers"] is not None:
        if num_beams == 1:
            return "Dola Generation"
        warnings.warn("You've set `dola_layers`, which triggers DoLa generate. Currently, DoLa generate is only "
                      "supported with Greedy Search and Sample.  However, the base decoding mode (based on current "
                      f"flags) is {'beam_sample' if do_sample else 'beam_search'} -- some of the set flags will be "
                      "ignored.")
    return None


def _check_decoding_method(options, num_beams, do_sample, top_k, trust_remote_code, batch, tokenizer, assistant):
    """Refuse, in transformers' words where it has them, what would make transformers decode another way than
    greedy, sampling or beam search; the rest of _METHOD_OPTIONS changes nothing in the method chosen."""
    method = _hub_method(options, num_beams, do_sample, top_k)
    if method is not None:
        if not trust_remote_code:
            raise ValueError(f"{method} requires `trust_remote_code=True` in your `generate` call, since it loads "
                             f"https://hf.co/{_HUB_METHODS[method]}.")
        raise NotImplementedError(f"{method} is not implemented in minilora: transformers 5 runs it from the Hub "
                                  f"repository https://hf.co/{_HUB_METHODS[method]}, and minilora never downloads or "
                                  "runs code from the Hub")
    if options["token_healing"]:
        if tokenizer is None:
            raise ValueError(" When generating with token healing, you must pass the model's tokenizer to the "
                             "`tokenizer` argument of `generate`.")
        raise NotImplementedError("generate(token_healing=True) is not implemented in minilora (transformers would "
                                  "re-tokenize the prompt's last token); leave token_healing unset")
    if options["speculation_type"] == "dflash" and assistant is not None:
        raise NotImplementedError("generate(speculation_type='dflash') is not implemented in minilora (transformers "
                                  "would draft a block of tokens with a DFlash assistant); leave it unset")
    speculating = options["use_mtp"] or options["assistant_early_exit"] is not None
    if speculating and num_beams > 1:  # assisted decoding extends greedy search and sampling only
        warnings.warn("You've set `assistant_model` or `use_mtp`, which triggers assisted generate. Currently, "
                      "assisted generate is only supported with Greedy Search and Sample. However, the base decoding "
                      f"mode (based on current flags) is {'beam_sample' if do_sample else 'beam_search'} -- some of "
                      "the set flags will be ignored.")
    elif options["use_mtp"]:  # (a Llama has no multi-token prediction layers: transformers' error)
        raise ValueError("Could not find `num_mtp_layers` in the model config. This model probably has no associated "
                         "mtp weights.")
    elif speculating:
        if batch > 1:
            raise ValueError("assisted generate is only supported for batch_size = 1")
        raise NotImplementedError(f"generate(assistant_early_exit={options['assistant_early_exit']!r}) is not "
                                  "implemented in minilora (transformers would draft with the model's first layers); "
                                  "pass assistant_model= a smaller model instead, or leave it unset")


def _call_config(own, passed):
    """The model's generation_config with a ``generation_config=`` given to the call on top: the options
    that the passed one sets win, the rest stay the model's (transformers 5's merge)."""
    if passed is None:
        return own
    if not hasattr(passed, "to_dict"):
        raise TypeError(f"generation_config must be a GenerationConfig, got {type(passed).__name__}")
    options = {k: v for k, v in (own.to_dict() if own is not None else {}).items() if v is not None}
    options.update({k: v for k, v in passed.to_dict().items() if v is not None})
    return GenerationConfig._unchecked(**options)  # (None in the passed config leaves the model's)


def _check_unimplemented(generation_config):
    """A generation_config.json option that transformers would apply and minilora cannot: refused by name."""
    for name, value in generation_config.other.items():
        if name not in _OFF or value is None or value == _OFF[name]:  # bookkeeping or a custom entry: ignored there
            continue
        raise NotImplementedError(
            f"the model's generation_config sets {name}={value!r}, which minilora's generate() does not implement "
            f"(transformers would apply it); remove it to generate without it: "
            f"model.generation_config.other.pop({name!r})")


def _resolved(name, value, generation_config):
    """The value of option ``name``: the call's, else the model's generation_config's, else transformers'."""
    if value is not DEFAULT:
        return value
    own = getattr(generation_config, name, None) if generation_config is not None else None
    return own if own is not None else DEFAULTS[name]


def _neutral_if_none(factor):
    """``temperature`` / ``repetition_penalty`` / ``encoder_repetition_penalty`` of None (a call's
    ``temperature=None``, e.g. a settings dict spread in as keywords): off, as 1.0 -- transformers adds
    those processors only for a value that ``is not None and != 1.0`` (before: a ValueError here)."""
    return 1.0 if factor is None else factor


def generate(model, input_ids=None, max_new_tokens=None, do_sample=DEFAULT, temperature=DEFAULT, top_k=DEFAULT,
             top_p=DEFAULT, eos_token_id=DEFAULT, pad_token_id=DEFAULT, seed=None, attention_mask=None,
             use_cache=DEFAULT, max_length=None, repetition_penalty=DEFAULT, num_return_sequences=DEFAULT,
             streamer=None, min_new_tokens=None, min_length=None, generation_config=None,
             return_dict_in_generate=DEFAULT, output_scores=DEFAULT, output_logits=DEFAULT, min_p=DEFAULT,
             no_repeat_ngram_size=DEFAULT, bad_words_ids=DEFAULT, sequence_bias=DEFAULT, suppress_tokens=DEFAULT,
             begin_suppress_tokens=DEFAULT, forced_eos_token_id=DEFAULT, stop_strings=DEFAULT, tokenizer=None,
             inputs=None, num_beams=DEFAULT, length_penalty=DEFAULT, early_stopping=DEFAULT,
             output_hidden_states=DEFAULT, output_attentions=DEFAULT, **kwargs):
    """Prompt ids followed by the generated ids (an int64 Tensor), with transformers' options.

    ``input_ids``: a batch [B, T] (one prompt: ``[ids]``; pad batches on the *left* and pass
    ``attention_mask``); a 1-D sequence is refused, as transformers (an IndexError there). Length: ``max_new_tokens`` new tokens, or ``max_length`` in all
    (prompt included); with neither, 20 new tokens as in transformers 5. ``eos_token_id`` (an id or
    a list; default the model config's, ``[]`` or ``None`` passed on purpose never stops, as transformers 5)
    ends a row. Sampling (``do_sample=True``)
    keeps transformers' defaults: ``temperature=1.0``, ``top_k=50``, ``top_p=1.0``.
    ``repetition_penalty`` > 1 makes tokens already in the row less likely (CTRL's rule, as
    transformers); ``no_repeat_ngram_size=n`` forbids repeating any n-gram; ``min_p`` (sampling) drops
    tokens less than ``min_p`` times as likely as the most likely one. ``num_return_sequences``
    samples that many continuations per prompt (rows
    ``i*n .. i*n+n-1``). ``streamer`` gets ``put(ids)`` with the prompt and then each new token, and
    ``end()`` (transformers' streamer protocol; ``TextStreamer`` prints the text as it comes). ``seed``
    makes sampling reproducible (default: the generator of ``minilora.manual_seed``).
    ``min_new_tokens`` / ``min_length`` (prompt included) keep the eos ids from being chosen until
    the row is that long. ``return_dict_in_generate=True`` returns a ``GenerateDecoderOnlyOutput``
    (``.sequences``; ``.scores``: the processed float32 scores of each step with ``output_scores``;
    ``.logits``: the raw ones with ``output_logits``; ``.hidden_states`` / ``.attentions`` with
    ``output_hidden_states`` / ``output_attentions``: per step the model's tuple for the positions it ran,
    the whole prompt first, then one token with the cache). The token rules are transformers' too:
    ``bad_words_ids`` (lists of ids that may never be generated), ``sequence_bias`` (``{(ids...): bias}``
    added to the last id's logit after the rest), ``suppress_tokens`` (never), ``begin_suppress_tokens``
    (not as the first new token) and ``forced_eos_token_id`` (the last new token). ``stop_strings`` (with
    the model's ``tokenizer=``) ends a row whose text ends with one, as transformers' StopStringCriteria.
    The rarer ones are transformers' too, taken as keywords: ``top_h`` (Top-H, after the temperature),
    ``typical_p``, ``epsilon_cutoff``, ``eta_cutoff`` (sampling filters, after min-p), ``encoder_repetition_penalty`` (the prompt's tokens), ``forced_bos_token_id``
    (the token after a one-token prompt), ``exponential_decay_length_penalty=(start, factor)`` (the eos ids grow
    likelier after ``start`` new tokens) and ``renormalize_logits`` (log-softmax after every processor).
    ``inputs_embeds`` [B, T, hidden] (a soft prompt, an image's vectors) runs as the prompt instead of ids:
    the answer is then the new tokens only, or follows ``input_ids`` given beside (any length, as there).
    ``logits_processor`` / ``stopping_criteria`` lists of the user's own (transformers' base classes, here
    too) and ``max_time`` (seconds, then every row stops) apply to greedy, sampling and beam search.
    ``assistant_model`` (a smaller model of the same vocabulary) or ``prompt_lookup_num_tokens`` run assisted
    decoding (``nn/assisted.py``); ``guidance_scale`` with ``negative_prompt_ids`` is classifier-free guidance and
    ``watermarking_config`` a green-list watermark (``nn/guidance.py``).

    An option not passed (``DEFAULT``) comes from the ``generation_config=`` passed, else the model's
    ``generation_config`` (its folder's generation_config.json) when that sets it, else from
    transformers' defaults (``DEFAULTS``) -- the order transformers uses. So do the lengths and the
    eos / pad ids. transformers' other options are accepted at their "off" value and refused otherwise.
    """
    max_length_passed = max_length is not None  # (transformers' warnings call any other max_length the default)
    rarer = {name: kwargs.pop(name, DEFAULT) for name in _PROCESSOR_OPTIONS}
    given_cache = _the_cache(kwargs.pop("past_key_values", None), kwargs.pop("cache", None))
    user_processors = LogitsProcessorList(_no_torch_callables(kwargs.pop("logits_processor", None), "logits_processor"))
    user_stops = StoppingCriteriaList(_no_torch_callables(kwargs.pop("stopping_criteria", None), "stopping_criteria"))
    max_time = kwargs.pop("max_time", DEFAULT)
    embeds = kwargs.pop("inputs_embeds", None)
    kwargs.pop("logits_to_keep", None)  # generate reads the last position's logits whatever the model keeps
    guided = {name: kwargs.pop(name, DEFAULT) for name in _GUIDED_OPTIONS}
    guided_arguments = {name: kwargs.pop(name, None) for name in _GUIDED_ARGUMENTS}
    if generation_config is None:
        _refuse_generation_parameters(getattr(model, "config", None))
    own = _call_config(getattr(model, "generation_config", None), generation_config)
    methods = _method_options(kwargs, own)
    bos_token_id = _plain_ids(kwargs.pop("bos_token_id", None))  # (only used when there is no prompt, as there)
    _check_call_options({name: value for name, value in kwargs.items() if not _custom_entry(name, own)})
    guided = {name: value if value is not DEFAULT else own.other.get(name, _GUIDED_OPTIONS[name])
              if own is not None else _GUIDED_OPTIONS[name] for name, value in guided.items()}
    _check_cache_implementation(kwargs.get("cache_implementation", own.other.get("cache_implementation")
                                           if own is not None else None))
    max_time = _resolved("max_time", max_time, own)
    if max_time is not None:  # started before the prompt runs, as there
        user_stops.append(MaxTimeCriteria(max_time))
    if _confidence_stop(kwargs, own) is not None:
        user_stops.insert(0, _confidence_stop(kwargs, own))
    if embeds is not None and input_ids is None and inputs is None:  # transformers' empty input_ids: the
        input_ids = np.zeros((_embeds_batch(embeds), 0), dtype=np.int64)  # answer holds only the new tokens
    else:
        input_ids = _the_prompt(input_ids, inputs, bos_token_id if bos_token_id is not None else
                                _bos_id(own, getattr(model, "config", None)))
    # The answer goes where the prompt came from (transformers returns ids on input_ids' device); the
    # loop itself keeps its ids on the host, where choosing the next token is cheap.
    out_device = input_ids.device if isinstance(input_ids, Tensor) else None
    ids = _as_int_array(input_ids, "input_ids")
    if ids.ndim == 1:  # transformers reads input_ids.shape[1]: an IndexError, never a 1-D answer
        raise ValueError(f"input_ids must be a [batch, seq_len] batch, got a 1-D sequence of shape {ids.shape}: "
                         f"pass [ids] (or ids[None]) for one prompt, as transformers' generate needs")
    if ids.ndim != 2 or ids.shape[0] == 0 or (ids.shape[1] == 0 and embeds is None):
        raise ValueError(f"input_ids must be a [batch, seq_len] batch with batch >= 1 and seq_len >= 1, "
                         f"got shape {ids.shape}")
    # the prompt's length: its embeddings' when given (the ids then are none of it, or all of it)
    prompt_length, unseen = _embedded_prompt(embeds, ids)
    config = getattr(model, "config", None)
    if own is not None:
        _check_unimplemented(own)
        if max_new_tokens is None and max_length is None:  # the call sets no length: the model's may
            max_new_tokens, max_length = own.max_new_tokens, own.max_length
        min_new_tokens = own.min_new_tokens if min_new_tokens is None else min_new_tokens
        min_length = own.min_length if min_length is None else min_length
    passed = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                  **{name: rarer[name] for name in _SAMPLING_OPTIONS})
    rarer = {name: _resolved(name, value, own) for name, value in rarer.items()}
    do_sample, temperature, top_k, top_p, min_p, use_cache, repetition_penalty, num_return_sequences = (
        _resolved(name, value, own) for name, value in
        (("do_sample", do_sample), ("temperature", temperature), ("top_k", top_k), ("top_p", top_p),
         ("min_p", min_p), ("use_cache", use_cache), ("repetition_penalty", repetition_penalty),
         ("num_return_sequences", num_return_sequences)))
    temperature, repetition_penalty = _neutral_if_none(temperature), _neutral_if_none(repetition_penalty)
    rarer["encoder_repetition_penalty"] = _neutral_if_none(rarer["encoder_repetition_penalty"])
    no_repeat_ngram_size = _resolved("no_repeat_ngram_size", no_repeat_ngram_size, own)
    if embeds is not None and ids.shape[1] == 0:
        _warn_penalties_miss_the_prompt(repetition_penalty, no_repeat_ngram_size)
    beam_only = dict(length_penalty=length_penalty, early_stopping=early_stopping)
    num_beams, length_penalty, early_stopping = (_resolved(name, value, own) for name, value in (
        ("num_beams", num_beams), ("length_penalty", length_penalty), ("early_stopping", early_stopping)))
    _check_decoding_method(methods, num_beams, do_sample, top_k, kwargs.get("trust_remote_code"), ids.shape[0],
                           tokenizer, guided_arguments["assistant_model"])
    token_rules = {name: _resolved(name, value, own) for name, value in
                   (("bad_words_ids", bad_words_ids), ("sequence_bias", sequence_bias),
                    ("suppress_tokens", suppress_tokens), ("begin_suppress_tokens", begin_suppress_tokens),
                    ("forced_eos_token_id", forced_eos_token_id))}
    return_dict_in_generate, output_scores, output_logits = (
        _resolved(name, value, own) for name, value in (("return_dict_in_generate", return_dict_in_generate),
                                                         ("output_scores", output_scores),
                                                         ("output_logits", output_logits)))
    internals = {name: _resolved(name, value, own) is True and return_dict_in_generate is True for name, value in
                 (("output_hidden_states", output_hidden_states), ("output_attentions", output_attentions))}
    counted = _length_counted_before_limits(ids, prompt_length)
    if counted != ids.shape[1] and min_length is not None:  # transformers counts min_length past the embedded
        min_length = max(min_length - prompt_length, 0)      # prompt too
    min_length = _min_length(min_new_tokens, min_length, ids.shape[1])
    min_new_tokens = _check_count("min_new_tokens", 0 if min_new_tokens is None else min_new_tokens)
    if not do_sample:
        _warn_unused_sampling_options(**passed)  # only what the call itself set, as transformers
    elif temperature != 1.0 and not isinstance(temperature, float):  # transformers' warper takes floats only
        raise _temperature_error(temperature)
    if num_beams == 1:
        _warn_unused_options("num_beams is 1", "only apply to beam search", **beam_only)
    if return_dict_in_generate is not True:
        _warn_unused_options("return_dict_in_generate is not True", "only apply to the dict output",
                             **{name: value for name, value in (("output_scores", output_scores),
                                                                ("output_logits", output_logits),
                                                                ("output_hidden_states", output_hidden_states),
                                                                ("output_attentions", output_attentions))
                                if value is True})
    max_new_tokens = _new_token_budget(max_new_tokens, max_length,
                                       counted if max_length is not None else ids.shape[1],
                                       getattr(config, "max_position_embeddings", None))
    max_new_tokens = _users_length_limit(user_stops, ids.shape[1], max_new_tokens)
    _check_sampling_options(do_sample, repetition_penalty, num_return_sequences, streamer, ids.shape[0], num_beams,
                            early_stopping)
    _warn_past_positions(config, prompt_length + max_new_tokens)
    if embeds is None:
        _warn_unfeasible_minimum(min_length, min_new_tokens, ids.shape[1], max_new_tokens, max_length_passed)
    eos = _id_list(_special_token("eos_token_id", eos_token_id, own, config))
    if any(i < 0 for i in eos):  # no token is ever a negative id: transformers warns (logs) the same
        warnings.warn(f"`eos_token_id` should consist of positive integers, but is {eos}. Your generation will not "
                      "stop until the maximum length is reached. Depending on other flags, it may even crash.")
    pad_token_id = _special_token("pad_token_id", pad_token_id, own, config)
    if isinstance(pad_token_id, (int, np.integer)) and pad_token_id < 0:  # transformers' "flags not valid" (logged)
        warnings.warn(f"`pad_token_id` should be positive but got {pad_token_id}: finished rows are filled with it")
    if pad_token_id is None:
        pad_token_id = eos[0] if eos else 0  # transformers pads finished rows with the first eos id
        if eos and attention_mask is None and ids.shape[0] > 1:
            warnings.warn("The attention mask and the pad token id were not set, with a batched input. As a "
                          "consequence, you may observe unexpected behavior. Please pass your input's "
                          "`attention_mask` to obtain reliable results.")
    if pad_token_id in eos and attention_mask is None and ids.shape[0] > 1:
        warnings.warn("The attention mask is not set with a batched input, and cannot be inferred from input "
                      "because pad token is same as eos token. As a consequence, you may observe unexpected "
                      "behavior. Please pass your input's `attention_mask` to obtain reliable results.")
    if attention_mask is None:
        mask = _inferred_mask(ids, pad_token_id, eos) if embeds is None else \
            np.ones((ids.shape[0], prompt_length), np.int64)
    else:
        mask = _as_int_array(attention_mask, "attention_mask")
    if mask.shape != (ids.shape[0], prompt_length):
        prompt = ("input_ids", ids.shape) if embeds is None else ("inputs_embeds", tuple(embeds.shape))
        raise ValueError(f"attention_mask has shape {mask.shape} but {prompt[0]} has shape {prompt[1]}: "
                         f"they must match")
    # a new token would follow padding: transformers warns for a batch of ids (not of embeddings), reading the
    # mask given, else the last ids
    if embeds is None and ids.shape[0] > 1 and (
            (mask[:, -1] == 0) if attention_mask is not None else (ids[:, -1] == pad_token_id)).any():
        warnings.warn("A decoder-only architecture is being used, but right-padding was detected! For correct "
                      "generation results, please set `padding_side='left'` when initializing the tokenizer.")
    prompt = ids
    if num_return_sequences > 1 and num_beams == 1:  # each prompt repeated, its copies side by side
        ids, mask = np.repeat(ids, num_return_sequences, 0), np.repeat(mask, num_return_sequences, 0)
        embeds = embeds.repeat_interleave(num_return_sequences, dim=0) if embeds is not None else None
    padding = (mask != 0).argmax(axis=1)  # each row's left padding
    process = _LogitsProcessors(**token_rules, eos=eos, last_step=max_new_tokens - 1,
                                repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                                min_length=min_length, min_new_tokens=min_new_tokens, prompt=prompt,
                                **{name: rarer[name] for name in _PROCESSOR_OPTIONS[len(_SAMPLING_OPTIONS):]})
    warpers = {name: rarer[name] for name in _SAMPLING_OPTIONS}
    top_p, warpers["typical_p"] = _mass_filter_or_off(top_p), _mass_filter_or_off(warpers["typical_p"])
    stops = _StopStrings(_resolved("stop_strings", stop_strings, own), tokenizer)
    if embeds is not None:
        use_cache = True  # as transformers: the embeddings run once, the cache holds them from then on
    rng = _random.Generator().manual_seed(int(seed)) if seed is not None else None
    guidance = _guidance(model, guided["guidance_scale"], guided_arguments, use_cache)
    watermark = _watermark(guided["watermarking_config"], config)
    if num_beams > 1:
        if guided_arguments["assistant_model"] is not None or guided["prompt_lookup_num_tokens"] is not None:
            warnings.warn("You've set `assistant_model` or `use_mtp`, which triggers assisted generate. Currently, "
                          "assisted generate is only supported with Greedy Search and Sample. However, the base decoding "
                          f"mode (based on current flags) is {'beam_sample' if do_sample else 'beam_search'} -- some of "
                          "the set flags will be ignored.")
        _refuse_filled_cache(given_cache, "beam search (num_beams > 1)")
        if kwargs.get("low_memory", own.other.get("low_memory") if own is not None else None):
            raise ValueError("`low_memory=True` is not supported after the beam search refactor. Please check the "
                             "discussion in #35802 *after the PR got merged*, and add a comment there if your "
                             "questions are not yet answered.")
        sampling = _beam_sampling(do_sample, rng, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                  **warpers)
        _refuse_users_eos_criteria(user_stops, "beam search (num_beams > 1)")
        return _beam_search(model, ids, mask, padding, process, stops, eos, max_new_tokens, pad_token_id,
                            _BeamOptions(num_beams, length_penalty, early_stopping, num_return_sequences, sampling),
                            return_dict_in_generate, output_scores, output_logits, out_device, use_cache,
                            user_processors, user_stops, embeds, guidance, watermark, internals)
    rules = _StepRules(process, user_processors, padding, ids.shape[1], eos, rng=rng, guidance=guidance,
                       watermark=watermark, sampling=dict(temperature=temperature, top_k=top_k, top_p=top_p,
                                                          min_p=min_p, **warpers) if do_sample else None)
    if streamer is not None:
        streamer.put(ids)
    drafts = _draft_source(model, guided, guided_arguments["assistant_model"], ids, mask, min_length, max_new_tokens,
                           num_return_sequences, embeds, use_cache, stops, pad_token_id)
    if drafts is not None:
        _refuse_users_eos_criteria(user_stops, "assisted generation")
        return _assisted_output(model, ids, mask, rules, drafts, stops, user_stops, streamer, given_cache,
                                return_dict_in_generate, output_scores, output_logits, out_device, internals)

    if num_return_sequences > 1:
        _refuse_filled_cache(given_cache, "num_return_sequences > 1")
    finished = np.zeros(ids.shape[0], dtype=bool)
    cache, prompt_mask = given_cache, mask
    scores, raw_logits, steps = [], [], []
    ending = _ending_ids(user_stops, eos)
    with no_grad():
        for step in range(max_new_tokens):
            positions = _position_ids(prompt_mask, unseen + ids.shape[1])
            # the positions not in the cache: the whole prompt at first (less a prefix the caller cached),
            # then the newest token; without a cache, every position every step
            start = _first_uncached(cache, unseen + ids.shape[1])
            out = model(**_step_inputs(ids, embeds, start, unseen, step), attention_mask=_mask_arg(mask), position_ids=positions[:, start:],
                        past_key_values=cache, use_cache=use_cache or cache is not None, **internals,
                        **_logits_kept(model))
            steps.append(out)
            cache = out.past_key_values if use_cache else None
            logits = out.logits[:, -1, :].cpu().numpy().astype(np.float32)  # transformers' float32 copy
            processed = rules.scores(logits, ids, step)
            token = np.where(finished, pad_token_id, rules.choose(processed))
            scores.append(processed)
            raw_logits.append(logits)
            ids = np.concatenate([ids, token[:, None]], axis=1)
            mask = np.concatenate([mask, np.ones_like(token)[:, None]], axis=1)
            if streamer is not None:
                streamer.put(token)
            finished |= np.isin(token, ending) | stops.found(ids) | user_stops.on_arrays(ids, _scores_output(
                scores, return_dict_in_generate and output_scores))
            if finished.all():
                break
    if streamer is not None:
        streamer.end()
    return _decoder_only_output(ids, scores, raw_logits, out_device, return_dict_in_generate, output_scores,
                                output_logits, cache=cache if use_cache else None,
                                **_per_step_internals(steps, internals))


def _scores_output(scores, wanted):
    """What transformers hands the stopping criteria as ``scores``: the scores output so far, None without."""
    return tuple(scores) if wanted else None


def _inferred_mask(ids, pad_token_id, eos):
    """transformers' attention mask when none is given: 0 at the pad id, if it occurs and is not an eos id."""
    if pad_token_id not in eos and (ids == pad_token_id).any():
        return (ids != pad_token_id).astype(np.int64)
    return np.ones(ids.shape, np.int64)


def _per_step(arrays, wanted, device):
    """One float32 Tensor per generated token (the dict output's scores / logits), or None when not wanted."""
    return tuple(Tensor(a, dtype=np.float32, device=device) for a in arrays) if wanted else None


def _decoder_only_output(ids, scores, raw_logits, device, return_dict_in_generate, output_scores, output_logits,
                         **fields):
    """What greedy decoding and sampling return: the ids, or with return_dict_in_generate the dict output."""
    sequences = Tensor(ids, dtype=np.int64, device=device)
    if not return_dict_in_generate:
        return sequences
    return GenerateDecoderOnlyOutput(sequences=sequences, scores=_per_step(scores, output_scores, device),
                                     logits=_per_step(raw_logits, output_logits, device), **fields)



@dataclass
class _StepRules:
    """How a step's logits become the scores its token is chosen from, in transformers' order of processors
    (classifier-free guidance, generate's own, the user's, the sampling warpers, the watermark, then
    ``renormalize_logits``), and how the token is chosen: drawn when sampling, else the argmax."""
    process: object  # _LogitsProcessors
    user_processors: object  # LogitsProcessorList
    padding: np.ndarray  # each row's left padding
    prompt_length: int  # the ids' length before the first new token: a step counts from there
    eos: list
    sampling: dict = None  # warp_logits' options (do_sample=True), else None
    rng: object = None
    guidance: object = None  # guidance.ClassifierFreeGuidance
    watermark: object = None  # guidance.Watermark

    def scores(self, logits, ids, step=None):
        step = ids.shape[1] - self.prompt_length if step is None else step
        if self.guidance is not None:
            logits = self.guidance(ids, logits)
        processed = self.user_processors.on_arrays(ids, self.process(logits, ids, self.padding, step))
        if self.sampling is not None:
            processed = warp_logits(processed, **self.sampling)
        if self.watermark is not None:
            processed = self.watermark(ids, processed)
        return self.process.renormalize(processed)

    def assistant_scores(self, logits, ids):
        """The scores an assistant model drafts from in assisted decoding: transformers hands the assistant's
        generate the call's whole processor list, warpers included, and that generate appends its own
        warpers, watermark and renormalisation after it -- so those run twice (a temperature of 0.7 drafts
        at 0.49)."""
        processed = self.scores(logits, ids)
        if self.sampling is not None:
            processed = warp_logits(processed, **self.sampling)
        if self.watermark is not None:
            processed = self.watermark(ids, processed)
        return self.process.renormalize(processed)

    def choose(self, scores):
        return _draw(scores, self.rng) if self.sampling is not None else scores.argmax(axis=-1)


def _check_cache_implementation(name):
    """``cache_implementation``: transformers' names are taken (the static, sliding-window, hybrid and
    offloaded caches hold the same keys and values as minilora's, so the tokens are the same); the quantized
    cache and paged attention are refused by name, another name is transformers' ValueError."""
    if name is None:
        return
    if name not in _CACHE_IMPLEMENTATIONS:
        raise ValueError(f"Invalid `cache_implementation` ({name}). Choose one of: {_CACHE_IMPLEMENTATIONS}")
    if name in _REFUSED_CACHES:
        raise NotImplementedError(f"generate(cache_implementation={name!r}) is not implemented in minilora: "
                                  f"{_REFUSED_CACHES[name]}; leave it unset for the dynamic cache")


def _guidance(model, guidance_scale, arguments, use_cache):
    """transformers adds its classifier-free guidance processor for a ``guidance_scale`` other than 1."""
    if guidance_scale is None or guidance_scale == 1:  # (a negative prompt alone is unused there too)
        return None
    from .guidance import ClassifierFreeGuidance
    negative = arguments["negative_prompt_ids"]
    negative_mask = arguments["negative_prompt_attention_mask"]
    return ClassifierFreeGuidance(guidance_scale, model,
                                  None if negative is None else _as_int_array(negative, "negative_prompt_ids"),
                                  None if negative_mask is None else _as_int_array(negative_mask, "attention_mask"),
                                  use_cache=use_cache)


def _watermark(watermarking_config, config):
    if watermarking_config is None:
        return None
    from .guidance import Watermark, watermark_options
    return Watermark(config.vocab_size, **watermark_options(watermarking_config))


def _draft_source(model, guided, assistant, ids, mask, min_length, max_new_tokens, num_return_sequences, embeds,
                  use_cache, stops, pad_token_id):
    """The candidate generator of assisted decoding (transformers' _get_candidate_generator): prompt lookup
    when ``prompt_lookup_num_tokens`` is set, else the assistant model; None: decode token by token."""
    lookup = guided["prompt_lookup_num_tokens"]
    if assistant is None and lookup is None:
        return None
    if num_return_sequences != 1:
        raise ValueError(f"num_return_sequences has to be 1 when doing assisted generate, but is "
                         f"{num_return_sequences}.")
    if ids.shape[0] > 1:
        raise ValueError("assisted generate is only supported for batch_size = 1")
    if embeds is not None:
        raise NotImplementedError("assisted generate with inputs_embeds is not implemented in minilora; pass input_ids")
    if not use_cache:
        raise RuntimeError("Assisted decoding requires a cache")
    from .assisted import _AssistantDrafts, _PromptLookup
    max_length = ids.shape[1] + max_new_tokens
    weight = guided["assistant_ensemble_weight"]
    if weight is not None and not 0.0 < weight < 1.0:
        raise ValueError(f"`assistant_ensemble_weight` must be in the open interval `(0.0, 1.0)`, but is {weight}. Use "
                         "`None` for standard (lossless) speculative decoding.")
    if lookup is not None:
        if weight is not None:
            raise ValueError("Setting `assistant_ensemble_weight` requires candidate logits from the assistant model. "
                             "It is not supported with prompt lookup decoding.")
        return _PromptLookup(lookup, guided["max_matching_ngram_size"] or 2, max_length, model.config.vocab_size)
    if stops.strings:  # transformers' assistant generates with the call's options but without its tokenizer
        raise ValueError(_NO_TOKENIZER_FOR_STOP_STRINGS)
    if model.config.vocab_size != assistant.config.vocab_size:
        raise ValueError("The main and assistant models have different tokenizers. Please provide `tokenizer` and "
                         "`assistant_tokenizer` to `generate()` (see https://huggingface.co/docs/transformers/en/"
                         "generation_strategies#universal-assisted-decoding); minilora does not implement universal "
                         "assisted decoding, so the assistant must share the model's vocabulary")
    if _computes_in_torch(type(assistant).__mro__):  # (a torch.nn.Module: transformers', PEFT's, the user's)
        raise TypeError(f"generate(assistant_model=...): the assistant is a torch model ({type(assistant).__name__}), "
                        "which computes on torch tensors; minilora drafts with a minilora model of the same vocabulary "
                        "(minilora.models.AutoModelForCausalLM.from_pretrained(its folder))")
    return _AssistantDrafts(assistant, min_length, max_length, mask, pad_token_id, weight)


def _assisted_output(model, ids, mask, rules, drafts, stops, user_stops, streamer, cache, return_dict_in_generate,
                     output_scores, output_logits, out_device, internals):
    from .assisted import assisted_decoding

    def ending(ids, scores):
        return ids.shape[1] >= drafts.max_length or bool(np.isin(ids[0, -1], rules.eos)) or \
            bool(stops.found(ids)[0]) or \
            bool(user_stops.on_arrays(ids, _scores_output(scores, return_dict_in_generate and output_scores))[0])
    ids, scores, raw_logits, cache, per_token = assisted_decoding(model, ids, mask, rules, drafts, ending, streamer,
                                                                  cache, internals)
    return _decoder_only_output(ids, scores, raw_logits, out_device, return_dict_in_generate, output_scores,
                                output_logits, cache=cache, **per_token)


class LogitsProcessor:
    """transformers' base class of a logits processor passed in ``generate(logits_processor=[...])``:
    ``__call__(input_ids, scores)`` takes the ids so far ([batch, length] int64) and the next token's scores
    ([batch, vocab] float32, already through generate's own processors) and returns the scores to use. User
    processors run after generate's own and before the sampling warpers (temperature, top-k, ...), as there."""

    def __call__(self, input_ids, scores):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores)")


class LogitsProcessorList(list):
    """transformers' list of logits processors: calling it applies each in turn."""

    def __call__(self, input_ids, scores, **kwargs):
        for processor in self:
            scores = processor(input_ids, scores, **kwargs)
        return scores

    def on_arrays(self, ids, scores):
        """The processors on generate's NumPy arrays, seen by them as Tensors (the float32 scores back)."""
        if not self:
            return scores
        out = self(Tensor(ids, dtype=np.int64), Tensor(scores, dtype=np.float32))
        return np.asarray(out.cpu().numpy() if isinstance(out, Tensor) else out, dtype=np.float32)


class StoppingCriteria:
    """transformers' base class of a stopping criterion passed in ``generate(stopping_criteria=[...])``:
    ``__call__(input_ids, scores)`` sees the ids with the newest token and that step's scores, and returns one
    bool per row (or one for all): True ends the row, which is padded from then on, as an eos would."""

    def __call__(self, input_ids, scores, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores)")


class StoppingCriteriaList(list):
    """transformers' list of stopping criteria: a row is done when any criterion says so."""

    def __call__(self, input_ids, scores, **kwargs):
        done = np.zeros(input_ids.shape[0], dtype=bool)
        for criterion in self:
            done = done | _host_bools(criterion(input_ids, scores, **kwargs))
        return Tensor(done, dtype=np.bool_)

    def on_arrays(self, ids, scores):
        """The criteria on generate's arrays, given what transformers gives them: the tuple of the scores output so
        far (every step's), or None when the dict output keeps no scores."""
        if not self:
            return np.zeros(ids.shape[0], dtype=bool)
        scores = None if scores is None else tuple(Tensor(step, dtype=np.float32) for step in scores)
        return self(Tensor(ids, dtype=np.int64), scores).numpy()


class ConfidenceCriteria(StoppingCriteria):
    """transformers' ConfidenceCriteria, which generate adds for a model whose generation_config says
    ``is_assistant``: every row stops once the first row's newest token had a probability under
    ``assistant_confidence_threshold`` (its step's scores, softmaxed; without a scores output there are none,
    and transformers fails on them as here)."""

    def __init__(self, assistant_confidence_threshold):
        self.assistant_confidence_threshold = assistant_confidence_threshold

    def __call__(self, input_ids, scores, **kwargs):
        probs = _softmax(scores[-1].numpy().astype(np.float64))
        return bool(probs[0, int(input_ids.numpy()[0, -1])] < self.assistant_confidence_threshold)


def _confidence_stop(kwargs, own):
    """A ConfidenceCriteria when the call or the model's config says ``is_assistant`` (and the threshold, 0.4 by
    default as there, is above 0), else None."""
    def option(name):
        return kwargs[name] if name in kwargs else own.other.get(name) if own is not None else None
    threshold = option("assistant_confidence_threshold")
    threshold = 0.4 if threshold is None else threshold
    return ConfidenceCriteria(threshold) if option("is_assistant") and threshold > 0 else None


class MaxTimeCriteria(StoppingCriteria):
    """transformers' ``generate(max_time=seconds)``: every row stops once more than ``max_time`` seconds have
    passed since generate began (checked after each new token, so at least one token is generated)."""

    def __init__(self, max_time, initial_timestamp=None):
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids, scores, **kwargs):
        return time.time() - self.initial_timestamp > self.max_time


class MaxLengthCriteria(StoppingCriteria):
    """transformers' criterion for ``max_length``: every row stops once the ids (the prompt counted) are
    ``max_length`` long. Passed by the user beside generate's own limits, the earlier stop wins."""

    def __init__(self, max_length, max_position_embeddings=None):
        self.max_length, self.max_position_embeddings = max_length, max_position_embeddings

    def __call__(self, input_ids, scores, **kwargs):
        return Tensor(np.full(input_ids.shape[0], input_ids.shape[1] >= self.max_length), dtype=np.bool_)


class EosTokenCriteria(StoppingCriteria):
    """transformers' criterion for ``eos_token_id`` (an id, a list of them or a tensor): a row stops once one of
    its last ``new_token_length`` ids is one of them."""

    def __init__(self, eos_token_id):
        ids = eos_token_id.numpy() if isinstance(eos_token_id, Tensor) else eos_token_id
        self.eos_token_id = Tensor(np.atleast_1d(np.asarray(ids, dtype=np.int64)))

    def __call__(self, input_ids, scores, new_token_length=1, **kwargs):
        newest = input_ids.numpy()[:, -new_token_length:]
        return Tensor(np.isin(newest, self.eos_token_id.numpy()).any(axis=-1), dtype=np.bool_)


def _computes_in_torch(kinds):
    """Are any of these classes transformers' or torch's? Theirs compute on torch tensors, and generate would hand
    them minilora Tensors: they failed inside torch ("embedding(): argument 'indices' must be Tensor, not
    numpy.ndarray", "pad(): argument 'input' must be Tensor, not Tensor")."""
    return any(kind.__module__.split(".")[0] in ("transformers", "torch") for kind in kinds)


# the generate option each of transformers' processors and criteria stands for (generate builds its own from it)
_OPTION_OF = {"RepetitionPenaltyLogitsProcessor": "repetition_penalty", "TemperatureLogitsWarper": "temperature",
              "TopKLogitsWarper": "top_k", "TopPLogitsWarper": "top_p", "MinPLogitsWarper": "min_p",
              "TypicalLogitsWarper": "typical_p", "EpsilonLogitsWarper": "epsilon_cutoff", "EtaLogitsWarper": "eta_cutoff",
              "NoRepeatNGramLogitsProcessor": "no_repeat_ngram_size", "MinLengthLogitsProcessor": "min_length",
              "MinNewTokensLengthLogitsProcessor": "min_new_tokens", "NoBadWordsLogitsProcessor": "bad_words_ids",
              "SequenceBiasLogitsProcessor": "sequence_bias", "SuppressTokensLogitsProcessor": "suppress_tokens",
              "SuppressTokensAtBeginLogitsProcessor": "begin_suppress_tokens",
              "ForcedBOSTokenLogitsProcessor": "forced_bos_token_id", "ForcedEOSTokenLogitsProcessor": "forced_eos_token_id",
              "ExponentialDecayLengthPenalty": "exponential_decay_length_penalty",
              "EncoderRepetitionPenaltyLogitsProcessor": "encoder_repetition_penalty",
              "MaxLengthCriteria": "max_length", "EosTokenCriteria": "eos_token_id", "MaxTimeCriteria": "max_time",
              "StopStringCriteria": "stop_strings"}


def _no_torch_callables(items, argument):
    """The user's processors or criteria, none of them transformers' own classes (a class of the user's derived from
    transformers' base class may well compute on what it is given): refused by name, with the way to say the same
    to minilora."""
    for item in items or []:
        if _computes_in_torch([type(item)]):
            name = type(item).__name__
            base = "LogitsProcessor" if argument == "logits_processor" else "StoppingCriteria"
            option = f"generate's {_OPTION_OF[name]}=, " if name in _OPTION_OF else ""
            own = f"minilora.nn.generation.{name}, " if isinstance(globals().get(name), type) else ""
            raise TypeError(f"generate({argument}=[{name}(...)]): transformers' {name} computes on torch tensors, and "
                            f"minilora hands {argument} minilora Tensors. Pass {option}{own}or a class of your own "
                            f"(minilora.nn.generation.{base})")
    return items or []


# transformers' precedence: a criterion of the user's of the class that generate builds from its own options
# (MaxLengthCriteria from max_length / max_new_tokens, EosTokenCriteria from eos_token_id) replaces generate's
# ("... will take precedence", it logs): the user's max_length alone bounds the ids, the user's ids alone end a row
def _users_length_limit(user_stops, length, max_new_tokens):
    """The new-token budget under a user's MaxLengthCriteria (at least one token: transformers checks after it)."""
    limits = [c.max_length for c in user_stops if isinstance(c, MaxLengthCriteria)]
    return max(min(limits) - length, 1) if limits else max_new_tokens


def _ending_ids(user_stops, eos):
    """The ids whose sampling ends a row: none of generate's own once the user passed an EosTokenCriteria."""
    return [] if any(isinstance(c, EosTokenCriteria) for c in user_stops) else eos


def _refuse_users_eos_criteria(user_stops, path):
    if any(isinstance(c, EosTokenCriteria) for c in user_stops):
        raise NotImplementedError(f"generate: an EosTokenCriteria of the user's with {path} is not supported by "
                                  f"minilora (transformers lets it replace eos_token_id's stop); pass eos_token_id")


def _warn_penalties_miss_the_prompt(repetition_penalty, no_repeat_ngram_size):
    """A prompt given as embeddings alone has no ids: the penalties see the new tokens only (transformers' warnings)."""
    if repetition_penalty is not None and repetition_penalty != 1.0:
        warnings.warn("Passing `repetition_penalty` with `inputs_embeds` and without `input_ids` to `generate` will "
                      "apply the penalty only to newly generated tokens, not to the prompt.", UserWarning)
    if no_repeat_ngram_size is not None and no_repeat_ngram_size > 0:
        warnings.warn("Passing `no_repeat_ngram_size` with `inputs_embeds` and without `input_ids` to `generate` will "
                      "apply n-gram constraints only to newly generated tokens, not to the prompt.", UserWarning)


def _step_inputs(ids, embeds, start, unseen, step):
    """The model's input for the positions from ``start`` on: the prompt's embeddings at the first step (the
    cache holds them from then on, as transformers runs ``inputs_embeds`` once), else the ids; ``unseen``
    prompt positions have embeddings and no id."""
    if embeds is not None and step == 0:
        return {"inputs_embeds": embeds[:, start:]}
    return {"input_ids": ids[:, start - unseen:]}


def _embeds_batch(embeds):
    if not isinstance(embeds, Tensor) or embeds.ndim != 3:
        raise ValueError(f"inputs_embeds must be a [batch, seq_len, hidden_size] Tensor, got "
                         f"{getattr(embeds, 'shape', type(embeds).__name__)}")
    return embeds.shape[0]


def _embedded_prompt(embeds, ids):
    """(the prompt's length, how many of its positions have no id in ``ids``). ``generate(inputs_embeds=)``
    runs the embeddings as the prompt; ``input_ids`` passed beside them are the same positions' ids, kept at
    the front of the answer (transformers' soft-prompt / multimodal recipe), or none (the answer is the new
    tokens only)."""
    if embeds is None:
        return ids.shape[1], 0
    if _embeds_batch(embeds) != ids.shape[0]:
        raise ValueError(f"generate(inputs_embeds of shape {tuple(embeds.shape)}) with input_ids of shape "
                         f"{ids.shape}: they must have the same batch size")
    # ids of another length than the embeddings (transformers takes them too): the model still runs the
    # embeddings as the prompt, the new tokens follow both (positions after the embeddings, ids after the ids)
    return embeds.shape[1], embeds.shape[1] - ids.shape[1]


def _length_counted_before_limits(ids, prompt_length):
    """How many positions transformers counts before max_length / min_length: the ids, plus the embedded
    prompt's length when ids and embeddings differ in length (its _prepare_generated_length subtracts it
    then, and only then; with embeddings alone the ids are none)."""
    return ids.shape[1] + (prompt_length if ids.shape[1] != prompt_length else 0)


def _host_bools(value):
    return np.asarray(value.cpu().numpy() if isinstance(value, Tensor) else value, dtype=bool)


def _logits_kept(model):
    """``{"logits_to_keep": 1}`` where the model's forward takes it, as transformers' generate passes it: the head
    runs on the last position alone -- less work, and a one-row product, summed as torch sums it -- else {}."""
    try:
        return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    except (TypeError, ValueError):  # (a forward without a signature)
        return {}


def _the_cache(past_key_values, cache):
    """generate's ``past_key_values=`` (transformers 5 also calls it ``cache=``): a KV cache (``DynamicCache()``,
    or one holding a prompt prefix, as transformers' prefix-reuse recipe) that generate fills and returns."""
    if past_key_values is not None and cache is not None:
        raise ValueError("pass the cache once: cache= (transformers 5's name) or past_key_values=")
    return cache if cache is not None else past_key_values  # (its type is checked by the model)


def _refuse_filled_cache(cache, mode):
    if cache is not None and cache.get_seq_length():
        raise NotImplementedError(f"generate({mode}) with past_key_values holding {cache.get_seq_length()} cached "
                                  "positions is not implemented in minilora (its rows would have to be repeated)")


def _first_uncached(cache, length):
    """Where the positions a step must run begin: after the cached ones. A cache that already holds every
    position is cropped by one, so that the last token runs again and gives the next token's logits (as
    transformers does with a fully cached prompt)."""
    cached = cache.get_seq_length() if cache is not None else 0
    if cached >= length:
        cache.crop(length - 1 - cached)
        return length - 1
    return cached


def compute_transition_scores(model, sequences, scores, beam_indices=None, normalize_logits=False):
    """transformers' ``model.compute_transition_scores``: the score of each generated token, [rows, steps],
    read from ``generate``'s per-step ``scores`` (or ``logits``); ``normalize_logits=True`` takes their
    log-softmax first (log-probabilities). With beam search, ``beam_indices`` says which beam's scores each
    token came from (-1 past a sequence's end: a 0 there). The same steps as transformers, on Tensors."""
    if beam_indices is None:
        rows = Tensor(np.arange(scores[0].shape[0]), dtype=np.int64, device=sequences.device)
        beam_indices = rows.view(-1, 1).expand(-1, len(scores))
    vocab_size = model.config.vocab_size
    stacked = ops.stack(scores).reshape(len(scores), -1).transpose(0, 1)
    if normalize_logits:
        stacked = ops.log_softmax(stacked.reshape(-1, vocab_size, stacked.shape[-1]), dim=1)
        stacked = stacked.reshape(-1, stacked.shape[-1])
    ended = beam_indices < 0
    max_beam_length = int((1 - ended.long()).sum(-1).max())
    beam_indices, ended = beam_indices.clone()[:, :max_beam_length], ended[:, :max_beam_length]
    beam_indices[ended] = 0
    indices = sequences[:, sequences.shape[-1] - max_beam_length:] + beam_indices * vocab_size
    transition_scores = stacked.gather(0, indices)
    transition_scores[ended] = 0
    return transition_scores

def _per_step_internals(steps, internals):
    """``hidden_states`` / ``attentions`` as transformers' generate gives them: one tuple per step of the
    model's own tuple (a layer each); with sdpa attention the model returns no weights, so each step's
    tuple is empty (transformers warns once, as the model here does)."""
    return {name[len("output_"):]: tuple(tuple(getattr(out, name[len("output_"):])) for out in steps)
            for name, wanted in internals.items() if wanted}



@dataclass
class GenerateDecoderOnlyOutput(ModelOutput):
    """What ``generate(..., return_dict_in_generate=True)`` returns (transformers' class of that name, its
    fields in its order): ``sequences``; ``scores`` (with ``output_scores=True``) one [batch, vocab]
    float32 tensor per new token, the scores the token was chosen from (after the repetition penalty, the
    min-length rule and, when sampling, temperature / top-k / top-p: -inf for what was filtered out);
    ``logits`` (with ``output_logits=True``) the raw ones; ``attentions`` / ``hidden_states`` per step the
    model's; ``cache`` the KV cache (``past_key_values``, its old name, still reads it). ``out[0]`` and
    ``out["sequences"]`` work as in transformers (an index counts only the fields that are set)."""
    sequences: Tensor = None
    scores: tuple = None
    logits: tuple = None
    attentions: tuple = None
    hidden_states: tuple = None
    cache: object = None


@dataclass
class GenerateBeamDecoderOnlyOutput(ModelOutput):
    """What beam search returns with ``return_dict_in_generate=True`` (transformers' class of that name):
    besides ``sequences``, ``scores`` (per step: the processed log-probabilities of every beam, [batch *
    num_beams, vocab]) and ``logits``: ``sequences_scores`` (with ``output_scores``: each returned
    sequence's summed log-probability divided by its length ** length_penalty) and ``beam_indices``
    (which beam each new token of a returned sequence came from; -1 past its end). ``cache``: the running
    beams' KV cache after the last step (with ``use_cache``)."""
    sequences: Tensor = None
    sequences_scores: Tensor = None
    scores: tuple = None
    logits: tuple = None
    beam_indices: Tensor = None
    attentions: tuple = None
    hidden_states: tuple = None
    cache: object = None


_UNREACHABLE = np.float32(-1.0e9)  # transformers' score for "cannot be chosen" (not -inf: sums stay finite)


@dataclass
class _BeamOptions:
    num_beams: int
    length_penalty: float
    early_stopping: object  # True, False or "never", as transformers
    num_return_sequences: int
    sampling: object = None  # beam sampling (do_sample=True): a _BeamSampling


@dataclass
class _BeamSampling:
    """Beam search with do_sample=True (transformers' "beam-search multinomial sampling"): the warpers run on
    every beam's log-probabilities, keeping at least one token more than there are eos ids, and the
    candidates are drawn without replacement from the softmax of their summed scores instead of taken best
    first."""
    warpers: dict  # warp_logits' options
    rng: object  # generate's seed= generator, or None: the global one

    def warp(self, log_probs, eos):
        return warp_logits(log_probs, **self.warpers, min_tokens_to_keep=len(eos) + 1 if eos else 2)

    def candidates(self, totals, keep):
        """transformers' multinomial(softmax(totals), keep), then those candidates ordered by their totals."""
        from ..factories import _draw_by_exponential_race
        drawn = _draw_by_exponential_race(_random.resolve(self.rng), _softmax(totals), keep)
        order = std_sort.sort_order(np.take_along_axis(totals, drawn, axis=1), descending=True)  # (torch.sort's)
        return np.take_along_axis(drawn, order, axis=1)


def _beam_sampling(do_sample, rng, **warpers):
    """The sampling of a beam search with do_sample=True (None without). Its min_tokens_to_keep reaches
    top-k and top-p here; the other filters with it are refused rather than run keeping one token."""
    if not do_sample:
        return None
    unkept = [name for name, off in (("min_p", None), ("typical_p", None), ("epsilon_cutoff", 0.0),
                                     ("eta_cutoff", 0.0)) if warpers[name] not in (None, off)]
    if unkept:
        raise NotImplementedError(f"beam sampling (num_beams > 1, do_sample=True) with {', '.join(unkept)} is not "
                                  "implemented in minilora (transformers keeps one token more than the eos ids "
                                  "there); use top_k / top_p / temperature")
    return _BeamSampling(warpers, rng)


def _check_beam_options(do_sample, num_return_sequences, streamer, num_beams):
    if num_return_sequences > num_beams:
        raise ValueError(f"`num_return_sequences` (={num_return_sequences}) has to be smaller or equal to "
                         f"`num_beams` (={num_beams}).")
    if streamer is not None:
        raise ValueError("`streamer` cannot be used with beam search (yet!). Make sure that `num_beams` is set to 1.")


def _beam_search(model, ids, mask, padding, process, stops, eos, max_new_tokens, pad_token_id, options,
                 return_dict_in_generate, output_scores, output_logits, out_device, use_cache=True,
                 user_processors=(), user_stops=(), embeds=None, guidance=None, watermark=None, internals=None):
    """transformers' beam search (``GenerationMixin._beam_search``), step for step.

    Each prompt keeps ``num_beams`` running sequences ("beams"). A step scores every beam's every next
    token by the beam's summed log-probability plus the token's, keeps the best ``keep`` candidates (more
    than num_beams, so that enough remain when some end), continues the best num_beams that did not end,
    and files the ones that ended (eos, a stop string, the length limit) among the finished sequences,
    scored by their sum divided by their length ** ``length_penalty``. It stops when no running beam
    can beat the worst finished one (or, with ``early_stopping=True``, once num_beams have finished).
    With ``use_cache`` each step runs only the newest token of every beam, on a KV cache whose rows are
    reordered to follow the beams chosen (transformers' ``reorder_cache``); without, the whole sequence.
    The user's logits processors see every beam's log-probabilities after generate's own processors; the user's
    stopping criteria (and ``max_time``) see every candidate, with the scores output so far, and end those they
    flag, as eos does. ``embeds``: the prompt's embeddings, run at the first step (``ids``: their ids, any number).
    ``options.sampling`` (do_sample=True): the candidates are drawn, not taken best first (``_BeamSampling``).
    ``guidance`` (classifier-free guidance) runs first on every beam's log-probabilities, ``watermark`` last
    before ``renormalize_logits``, as transformers' processor list orders them. ``internals``: the
    ``output_hidden_states`` / ``output_attentions`` asked for, returned per step as the model gave them for
    every beam's row (not reordered to follow the beams), as transformers' ``_beam_search`` does."""
    internals = internals or {}
    batch, prompt_length = ids.shape
    unseen = embeds.shape[1] - prompt_length if embeds is not None else 0  # prompt positions without an id
    embeds = embeds.repeat_interleave(options.num_beams, dim=0) if embeds is not None else None
    beams, max_length = options.num_beams, prompt_length + max_new_tokens
    keep = max(2, 1 + len(eos)) * beams  # candidates per prompt: enough even if many end with an eos
    fill = (pad_token_id or eos[0]) if eos else -1  # transformers' filler past a sequence's end
    running = np.full((batch, beams, max_length), fill, dtype=np.int64)
    running[:, :, :prompt_length] = ids[:, None, :]
    running_scores = np.zeros((batch, beams), dtype=np.float32)
    running_scores[:, 1:] = _UNREACHABLE  # at first every beam is the prompt: only one may continue
    running_origins = np.full((batch, beams, max_new_tokens), -1, dtype=np.int64)
    finished = _FinishedBeams(running.copy(), running_origins.copy(), batch, beams)
    flat_mask, flat_padding = np.repeat(mask, beams, 0), np.repeat(padding, beams, 0)
    improvable = np.ones((batch, 1), dtype=bool)
    all_scores, raw_logits, cache, steps = [], [], None, []
    with no_grad():
        for length in range(prompt_length, max_length):
            step = length - prompt_length
            flat = running[:, :, :length].reshape(batch * beams, length)
            step_mask = np.concatenate([flat_mask, np.ones((batch * beams, step), dtype=flat_mask.dtype)], axis=1)
            positions = _position_ids(flat_mask, unseen + length)
            start = _first_uncached(cache, unseen + length)
            out = model(**_step_inputs(flat, embeds, start, unseen, step), attention_mask=_mask_arg(step_mask), position_ids=positions[:, start:],
                        past_key_values=cache, use_cache=use_cache, **internals,
                        **_logits_kept(model))
            cache = out.past_key_values if use_cache else None
            if any(internals.values()):
                steps.append(out)
            logits = out.logits[:, -1, :].cpu().numpy().astype(np.float32)
            log_probs = _log_softmax(logits) if guidance is None else guidance(flat, _log_softmax(logits))
            log_probs = process(log_probs, flat, flat_padding, step)
            log_probs = LogitsProcessorList(user_processors).on_arrays(flat, log_probs)
            if options.sampling is not None:
                log_probs = options.sampling.warp(log_probs, eos)
            if watermark is not None:
                log_probs = watermark(flat, log_probs)
            log_probs = process.renormalize(log_probs)
            all_scores.append(log_probs)
            raw_logits.append(logits)
            # every (beam, token) continuation of a prompt, by its summed log-probability
            totals = (log_probs.reshape(batch, beams, -1) + running_scores[:, :, None]).reshape(batch, -1)
            best = _top(totals, keep) if options.sampling is None else options.sampling.candidates(totals, keep)
            vocab = log_probs.shape[-1]
            origin, token = best // vocab, best % vocab
            scores = np.take_along_axis(totals, best, axis=1)
            candidates = np.take_along_axis(running, origin[:, :, None], axis=1)
            candidates[:, :, length] = token
            origins = np.take_along_axis(running_origins, origin[:, :, None], axis=1)
            origins[:, :, step] = origin + np.arange(batch)[:, None] * beams  # transformers' flat beam index
            ended = _ended(candidates[:, :, :length + 1], eos, stops, max_length)
            if user_stops:  # transformers passes them the scores it returns (None unless output_scores)
                seen = _scores_output(all_scores, return_dict_in_generate and output_scores)
                ended |= user_stops.on_arrays(candidates[:, :, :length + 1].reshape(-1, length + 1),
                                              seen).reshape(ended.shape)
            # the best num_beams that did not end run on
            alive = scores + ended * _UNREACHABLE
            chosen = _top(alive, beams)
            running = np.take_along_axis(candidates, chosen[:, :, None], axis=1)
            running_scores = np.take_along_axis(alive, chosen, axis=1)
            running_origins = np.take_along_axis(origins, chosen[:, :, None], axis=1)
            if cache is not None:  # each running beam continues the cache of the beam it came from
                cache.reorder_cache((np.take_along_axis(origin, chosen, axis=1) + np.arange(batch)[:, None] * beams)
                                    .reshape(-1))
            # the ones that ended among the best num_beams candidates are filed as finished
            finished.add(candidates, origins, scores, ended, step + 1, options, improvable)
            improvable &= finished.can_improve(running_scores, length + 1 - prompt_length, max_new_tokens, options)
            all_full = finished.done.all() and options.early_stopping is True
            if not improvable.any() or all_full or ended.all():
                break
    return _beam_output(finished, options, prompt_length, all_scores, raw_logits, return_dict_in_generate,
                        output_scores, output_logits, out_device, cache, _per_step_internals(steps, internals))


class _FinishedBeams:
    """The best num_beams finished sequences of each prompt so far, with their length-penalised scores."""

    def __init__(self, sequences, origins, batch, beams):
        self.sequences, self.origins = sequences, origins
        self.scores = np.full((batch, beams), _UNREACHABLE, dtype=np.float32)
        self.done = np.zeros((batch, beams), dtype=bool)

    def add(self, candidates, origins, scores, ended, generated, options, improvable):
        beams = options.num_beams
        just_ended = ended & (np.arange(ended.shape[1]) < beams)[None, :]  # only the top num_beams may be filed
        scores = scores / np.float32(generated ** options.length_penalty)
        full = self.done.all(axis=-1, keepdims=True) & (options.early_stopping is True)
        scores = scores + full * _UNREACHABLE + (~improvable) * _UNREACHABLE + (~just_ended) * _UNREACHABLE
        merged_scores = np.concatenate([self.scores, scores], axis=1)
        best = _top(merged_scores, beams)
        self.scores = np.take_along_axis(merged_scores, best, axis=1)
        self.sequences = np.take_along_axis(np.concatenate([self.sequences, candidates], axis=1), best[:, :, None], 1)
        self.origins = np.take_along_axis(np.concatenate([self.origins, origins], axis=1), best[:, :, None], 1)
        self.done = np.take_along_axis(np.concatenate([self.done, just_ended], axis=1), best, axis=1)

    def can_improve(self, running_scores, generated, max_new_tokens, options):
        """Could the best running beam still beat the worst finished sequence (transformers' heuristic)?"""
        if options.early_stopping == "never" and options.length_penalty > 0.0:
            generated = max_new_tokens  # it may grow to the longest length, which divides by the most
        best_running = running_scores[:, :1] / np.float32(generated ** options.length_penalty)
        worst = np.where(self.done, self.scores.min(axis=1, keepdims=True), _UNREACHABLE)
        return (best_running > worst).any(axis=-1, keepdims=True)


def _beam_output(finished, options, prompt_length, all_scores, raw_logits, return_dict_in_generate,
                 output_scores, output_logits, out_device, cache=None, internals=None):
    wanted = options.num_return_sequences
    sequences = finished.sequences[:, :wanted].reshape(-1, finished.sequences.shape[-1])
    origins = finished.origins[:, :wanted].reshape(-1, finished.origins.shape[-1])
    generated = int((origins != -1).sum(axis=1).max())  # the longest returned sequence's new tokens
    sequences, origins = sequences[:, :prompt_length + generated], origins[:, :generated]
    result = Tensor(sequences, dtype=np.int64, device=out_device)
    if not return_dict_in_generate:
        return result

    scores = Tensor(finished.scores[:, :wanted].reshape(-1), dtype=np.float32, device=out_device)
    return GenerateBeamDecoderOnlyOutput(sequences=result, scores=_per_step(all_scores, output_scores, out_device),
                                         logits=_per_step(raw_logits, output_logits, out_device),
                                         sequences_scores=scores if output_scores else None,
                                         beam_indices=Tensor(origins, dtype=np.int64, device=out_device),
                                         cache=cache, **(internals or {}))


def _ended(sequences, eos, stops, max_length):
    """[batch, candidates]: does each candidate sequence end here (eos, a stop string, the length limit)?"""
    batch, count, length = sequences.shape
    if length >= max_length:
        return np.ones((batch, count), dtype=bool)
    ended = np.isin(sequences[:, :, -1], eos)
    return ended | stops.found(sequences.reshape(batch * count, length)).reshape(batch, count)


def _top(values, k):
    """``torch.topk(values, k)``'s indices: the ``k`` largest values of each row, largest first, equal ones in
    torch's CPU order (std_sort; a forced eos list ties its ids: transformers' beam then ends on the one torch
    puts first, not the lower id)."""
    return std_sort.topk_order(values, k, largest=True, sorted=True)


def _log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _forbid(scores, token_ids):
    """-inf for ``token_ids`` in every row (transformers' MinLength / MinNewTokensLength processors)."""
    scores = scores.copy()
    scores[:, list(token_ids)] = -np.inf
    return scores


class _LogitsProcessors:
    """transformers' logits processors, in its order: ``sequence_bias``, the repetition penalty,
    ``no_repeat_ngram_size``, ``bad_words_ids`` (a bad word is a bias of -inf: its last id after the
    others, or always for one id -- never an eos id alone, as transformers drops those), the minimum
    lengths (no eos yet), ``forced_eos_token_id`` at the last step, ``suppress_tokens`` always and
    ``begin_suppress_tokens`` at the first step. Checked as transformers checks them: a malformed list
    is a ValueError, not a silently different answer. ``process(scores, ids, padding, step)``."""

    def __init__(self, bad_words_ids, sequence_bias, suppress_tokens, begin_suppress_tokens, forced_eos_token_id,
                 eos, last_step, repetition_penalty, no_repeat_ngram_size, min_length, min_new_tokens, prompt=None,
                 encoder_repetition_penalty=1.0, renormalize_logits=False, forced_bos_token_id=None,
                 exponential_decay_length_penalty=None, remove_invalid_values=False, encoder_no_repeat_ngram_size=0):
        self.eos, self.repetition_penalty, self.no_repeat_ngram_size = eos, repetition_penalty, no_repeat_ngram_size
        self.remove_invalid_values = remove_invalid_values is True
        self.prompt_ngrams = _prompt_ngrams(prompt, encoder_no_repeat_ngram_size)
        self.prompt, self.encoder_repetition_penalty = prompt, encoder_repetition_penalty
        if encoder_repetition_penalty != 1.0 and (isinstance(encoder_repetition_penalty, bool) or not isinstance(
                encoder_repetition_penalty, (int, float)) or not encoder_repetition_penalty > 0):
            raise ValueError(f"`penalty` has to be a strictly positive float, but is {encoder_repetition_penalty} "
                             "(encoder_repetition_penalty)")
        self.renormalize_logits, self.forced_bos = renormalize_logits, forced_bos_token_id
        self.decay = _decay(exponential_decay_length_penalty)
        self.min_length, self.min_new_tokens = min_length, min_new_tokens
        self.biases = _sequence_bias(sequence_bias)
        if bad_words_ids is not None:
            _check_bad_words(bad_words_ids)
            self.bad = {tuple(word): float("-inf") for word in bad_words_ids  # an empty word bans nothing
                        if word and not any(word == [e] for e in eos)}
            _check_sequences(self.bad, "bad_words_ids")
        else:
            self.bad = {}
        self.suppress = [] if suppress_tokens is None else list(suppress_tokens)
        self.begin_suppress = [] if begin_suppress_tokens is None else list(begin_suppress_tokens)
        self.forced_eos = _id_list(forced_eos_token_id)
        if any(i < 0 for i in self.forced_eos):
            raise ValueError(f"`eos_token_id` has to be a list of positive integers, but is {forced_eos_token_id}")
        for name, forced in (("forced_bos_token_id", _id_list(forced_bos_token_id)), ("forced_eos_token_id",
                                                                                        self.forced_eos)):
            if forced and set(forced) <= set(self.suppress):  # every logit -inf at the forcing step: nan
                raise ValueError(f"Every token in `{name}` ({sorted(set(forced))}) is also in `suppress_tokens`. "
                                 "Forcing a token while suppressing it sets all logits to `-inf` at the forcing "
                                 "step (transformers refuses it too); remove the overlap")
        self.last_step = last_step
        # begin_suppress_tokens hold off the first token after the forced bos one, if that is the first
        self.begin_step = 1 if forced_bos_token_id is not None and prompt is not None and prompt.shape[1] == 1 else 0

    def __call__(self, scores, ids, padding, step):
        """``padding``: each row's left padding, which the repetition penalty does not look at (transformers'
        prompt_ignore_length, read from the attention mask)."""
        scores = _add_sequence_bias(scores, ids, self.biases)
        if self.encoder_repetition_penalty != 1.0:  # the prompt's tokens made likelier (a hallucination penalty)
            scores = _penalize_prompt_tokens(scores, self.prompt, self.encoder_repetition_penalty)
        if self.repetition_penalty != 1.0:
            scores = apply_repetition_penalty(scores, ids, self.repetition_penalty, padding)
        scores = ban_repeated_ngrams(scores, ids, self.no_repeat_ngram_size)
        if self.prompt_ngrams is not None:
            scores = self.prompt_ngrams(scores, ids)
        scores = _add_sequence_bias(scores, ids, self.bad)
        if self.eos and (ids.shape[1] < self.min_length or step < self.min_new_tokens):  # too short to end yet
            scores = _forbid(scores, self.eos)
        return self._force_and_suppress(scores, step, ids.shape[1])

    def _decay_eos_penalty(self, logits, length):
        """transformers' ExponentialDecayLengthPenalty: past ``start`` new tokens, each eos id's score grows by
        ``|score| * (factor ** n - 1)`` (n: tokens past the start), so ending gets likelier and likelier."""
        start, factor = self.decay
        past = length - (start + self.prompt.shape[1])
        if past <= 0 or not self.eos:
            return logits
        eos_scores = logits[:, self.eos]
        penalty = np.where(np.isfinite(eos_scores), np.abs(eos_scores) * np.float32(factor ** past - 1), 0)
        penalties = np.zeros_like(logits)
        penalties[:, self.eos] = penalty
        return logits + penalties

    def renormalize(self, scores):
        """``renormalize_logits=True``: log-softmax after every processor and warper, as transformers."""
        return _log_softmax(scores) if self.renormalize_logits else scores

    def _force_and_suppress(self, logits, step, length):
        if self.forced_bos is not None and length == 1:  # a one-token sequence: the next token is forced
            logits = np.full_like(logits, -np.inf)
            logits[:, self.forced_bos] = 0
        if self.forced_eos and step == self.last_step:  # the last token is an eos id: every other is -inf
            logits = np.full_like(logits, -np.inf)
            logits[:, self.forced_eos] = 0
        if self.remove_invalid_values:  # transformers' InfNanRemoveLogitsProcessor: nan 0, +-inf the largest floats
            limit = np.finfo(logits.dtype).max
            logits = np.where(np.isnan(logits), 0, np.where(np.isinf(logits), np.copysign(limit, logits), logits))
            logits = logits.astype(np.float32, copy=False)
        if self.decay is not None:
            logits = self._decay_eos_penalty(logits, length)
        suppressed = self.suppress + (self.begin_suppress if step == self.begin_step else [])
        suppressed = [i for i in suppressed if 0 <= i < logits.shape[-1]]  # others are no token: nothing to do
        return _forbid(logits, suppressed) if suppressed else logits


class _PromptNgramBan:
    """transformers' EncoderNoRepeatNGramLogitsProcessor, which a decoder-only model gets too (its prompt is the
    "encoder input"): a token that would end an ``n``-gram of the row's prompt after the row's last n - 1 tokens
    is -inf. Rows past the prompts' count are their prompt's copies (num_return_sequences, beams)."""

    def __init__(self, prompt, n):
        self.n = n
        self.banned = []  # per prompt: {the n - 1 tokens before: the tokens that end such an n-gram}
        for seq in prompt.tolist():
            ngrams = {}
            for i in range(len(seq) - n + 1):
                ngrams.setdefault(tuple(seq[i:i + n - 1]), []).append(seq[i + n - 1])
            self.banned.append(ngrams)

    def __call__(self, scores, ids):
        copies = scores.shape[0] // len(self.banned)
        scores = scores.copy()
        for row, seq in enumerate(ids.tolist()):
            before = tuple(seq[len(seq) + 1 - self.n:])
            scores[row, self.banned[row // copies].get(before, [])] = -np.inf
        return scores


def _prompt_ngrams(prompt, n):
    """encoder_no_repeat_ngram_size's ban (None: off), checked as transformers checks it."""
    if n is None or n == 0 or prompt is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"`encoder_ngram_size` has to be a strictly positive integer, but is {n}")
    if (prompt < 0).any():  # transformers' dummy prompt (-100s): the processor is left out, with its warning
        warnings.warn("Passing `encoder_no_repeat_ngram_size` requires some form of `input_ids` to be passed to "
                      "`generate`, ignoring the argument.")
        return None
    return _PromptNgramBan(prompt, n)


_NO_TOKENIZER_FOR_STOP_STRINGS = (
    "There are one or more stop strings, either in the arguments to `generate` or in the model's generation config, "
    "but we could not locate a tokenizer. When generating with stop strings, you must pass the model's tokenizer to "
    "the `tokenizer` argument of `generate`.")


class _StopStrings:
    """transformers' StopStringCriteria: a row stops when one of the strings is in its text and reaches
    into its last token (``["st", "op"]``, ``["las", "topper"]`` stop at "stop"; ``["stop", "at"]`` does
    not: that one was found a step before). A token's text is what the tokenizer decodes it to after a
    fixed prefix, as transformers reads it (a byte-level piece of a character is no letter on its own)."""

    _PREFIX = "abcdef"

    def __init__(self, stop_strings, tokenizer):
        self.strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings or [])
        if self.strings and tokenizer is None:
            raise ValueError(_NO_TOKENIZER_FOR_STOP_STRINGS)
        if not all(isinstance(text, str) and text for text in self.strings):
            raise ValueError(f"stop_strings must be a non-empty string or a list of them, got {stop_strings!r}")
        self.tokenizer, self.texts = tokenizer, {}
        if self.strings:
            self.prefix_ids = list(tokenizer.encode(self._PREFIX, add_special_tokens=False))

    def _text(self, token):
        if token not in self.texts:
            text = self.tokenizer.decode(self.prefix_ids + [token])
            self.texts[token] = text[text.index(self._PREFIX) + len(self._PREFIX):] if self._PREFIX in text else text
        return self.texts[token]

    def found(self, ids):
        """Per row: does a stop string end inside (or overhang) the row's last token?"""
        if not self.strings:
            return np.zeros(ids.shape[0], dtype=bool)
        return np.array([any(self._ends_in_last_token(row, text) for text in self.strings) for row in ids.tolist()])

    def _ends_in_last_token(self, row, stop):
        last = self._text(row[-1])
        before, i = "", len(row) - 1
        while len(before) < len(stop) - 1 and i > 0:  # just enough of the earlier text to hold the rest
            i -= 1
            before = self._text(row[i]) + before
        text = before + last
        return stop in text[max(len(before) - len(stop) + 1, 0):]  # an occurrence that reaches the last token


def _decay(exponential_decay_length_penalty):
    """``(start, factor)``: from ``start`` new tokens on, the eos ids' scores grow by ``factor`` per token."""
    if exponential_decay_length_penalty is None:
        return None
    pair = exponential_decay_length_penalty
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or any(
            isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.number)) for x in pair):
        raise ValueError(f"exponential_decay_length_penalty must be a pair (start_index, decay_factor) of numbers, "
                         f"got {pair!r}")
    start, factor = pair
    return int(start), float(factor)


def _penalize_prompt_tokens(scores, prompt, penalty):
    """transformers' EncoderRepetitionPenaltyLogitsProcessor for a decoder-only model, whose "encoder ids"
    are the prompt rows: their tokens' scores are multiplied by ``penalty`` if positive, divided if negative.
    Each beam (or returned sequence) of a prompt looks at that prompt, padding included, as transformers."""
    scores = scores.copy()
    prompt = np.repeat(prompt, scores.shape[0] // prompt.shape[0], axis=0)
    index = np.arange(scores.shape[0])[:, None]
    seen = scores[index, prompt]
    scores[index, prompt] = np.where(seen < 0, seen / penalty, seen * penalty)
    return scores


def _check_bad_words(bad_words_ids):
    if not isinstance(bad_words_ids, list) or not bad_words_ids:
        raise ValueError(f"`bad_words_ids` has to be a non-empty list, but is {bad_words_ids}.")
    if any(not isinstance(word, list) for word in bad_words_ids):
        raise ValueError(f"`bad_words_ids` has to be a list of lists, but is {bad_words_ids}.")


def _sequence_bias(sequence_bias):
    """``{(ids...): bias}`` from transformers' two spellings: that dict, or ``[[[ids...], bias], ...]``
    (generation_config.json's, as JSON has no tuple keys). Biases are floats, as transformers requires."""
    if sequence_bias is None:
        return {}
    if not isinstance(sequence_bias, (dict, list)) or not sequence_bias:
        raise ValueError(f"`sequence_bias` has to be a non-empty dictionary, or non-empty list of lists but is "
                         f"{sequence_bias}.")
    if isinstance(sequence_bias, list):
        if not all(isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], list)
                   and isinstance(pair[1], float) for pair in sequence_bias):
            raise ValueError(f"Each element in `sequence_bias` has to be a non-empty list of lists of positive "
                             f"integers and float, but is {sequence_bias}.")
        sequence_bias = {tuple(ids): bias for ids, bias in sequence_bias}
    if any(not isinstance(key, tuple) for key in sequence_bias):
        raise ValueError(f"`sequence_bias` has to be a dict with tuples as keys, but is {sequence_bias}.")
    if any(not isinstance(bias, float) for bias in sequence_bias.values()):
        raise ValueError(f"`sequence_bias` has to be a dict with floats as values, but is {sequence_bias}.")
    _check_sequences(sequence_bias, "sequence_bias")
    return sequence_bias


def _check_sequences(biases, name):
    for ids in biases:
        if not ids or any(isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)) or i < 0
                          for i in ids):
            raise ValueError(f"Each sequence in `{name}` has to be a non-empty list of positive integers, "
                             f"but is {list(biases)}.")


def _add_sequence_bias(logits, ids, biases):
    """Each ``(ids..., last): bias``: ``bias`` added to ``last``'s logit in the rows whose ids end with the
    others (always, for one id). All biases are summed first and added once, in float32, as transformers."""
    if not biases:
        return logits
    vocab = logits.shape[-1]
    out_of_range = [i for seq in biases for i in seq if i >= vocab]
    if out_of_range:
        raise ValueError(f"The model vocabulary size is {vocab}, but the following tokens were being biased: "
                         f"{out_of_range}")
    bias = np.zeros_like(logits, dtype=np.float32)
    for (*prefix, last), value in biases.items():
        if len(prefix) > ids.shape[1]:  # longer than the context: cannot be completed yet
            continue
        rows = (ids[:, ids.shape[1] - len(prefix):] == prefix).all(axis=1) if prefix else slice(None)
        bias[rows, last] += np.float32(value)
    return logits + bias


def apply_repetition_penalty(logits, ids, penalty, prompt_ignore_length=None):
    """Each token already in a row: its logit divided by ``penalty`` if positive, multiplied if
    negative (so it always becomes less likely for penalty > 1), as transformers' processor does.
    ``prompt_ignore_length`` (one count per row): that many leading ids are not looked at -- generate
    passes each row's left padding, as transformers does."""
    logits = logits.copy()
    rows = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)
    if prompt_ignore_length is not None:
        counted = np.arange(ids.shape[1])[None, :] >= np.asarray(prompt_ignore_length)[:, None]
        rows, ids = rows[counted], ids[counted]
    seen = logits[rows, ids]
    logits[rows, ids] = np.where(seen < 0, seen * penalty, seen / penalty)
    return logits


def _new_token_budget(max_new_tokens, max_length, prompt_length, position_limit=None):
    """How many tokens to generate, as transformers 5 decides it: ``max_new_tokens`` if given (it wins
    over ``max_length``, with a warning), else ``max_length`` minus the prompt, else 20 new tokens
    (capped at the model's ``max_position_embeddings``). Nothing to generate is refused, not returned."""
    if max_new_tokens is not None:
        if isinstance(max_new_tokens, (int, np.integer)) and max_new_tokens <= 0:  # transformers' words
            raise ValueError(f"`max_new_tokens` must be greater than 0, but is {max_new_tokens}.")
        _check_count("max_new_tokens", max_new_tokens, minimum=1)  # 2.5, True, "3": refused, not rounded
        if max_length is not None:
            warnings.warn(f"both max_new_tokens (={max_new_tokens}) and max_length (={max_length}) were given: "
                          "max_new_tokens wins, as in transformers")
        return max_new_tokens
    if max_length is not None:
        _check_count("max_length", max_length)
        total = max_length
    else:
        total = prompt_length + DEFAULT_NEW_TOKENS
        if position_limit is not None:
            total = min(total, position_limit)
        warnings.warn(f"no max_new_tokens given: generating up to max_length={total} tokens in all (transformers' "
                      f"default of {DEFAULT_NEW_TOKENS} new ones); pass max_new_tokens=... to choose")
    if total <= prompt_length:
        raise ValueError(f"Input length of input_ids is {prompt_length}, but `max_length` is set to {total}. This can "
                         "lead to unexpected behavior. You should consider increasing `max_length` or, better yet, "
                         "setting `max_new_tokens`.")
    return total - prompt_length


def _min_length(min_new_tokens, min_length, prompt_length):
    """The length (prompt included) before which no eos id may be chosen. A ``min_new_tokens`` that is set,
    even to 0 and even by the model's generation_config, replaces ``min_length`` (transformers 5's rule:
    it counts from the prompt's end, and wins over min_length with a warning)."""
    if min_new_tokens is None:
        return _check_count("min_length", 0 if min_length is None else min_length)
    _check_count("min_new_tokens", min_new_tokens)
    if min_length is not None:
        _check_count("min_length", min_length)
        warnings.warn(f"both min_new_tokens (={min_new_tokens}) and min_length (={min_length}) were given: "
                      "min_new_tokens wins, as in transformers")
    return prompt_length + min_new_tokens


def _warn_unfeasible_minimum(min_length, min_new_tokens, prompt_length, max_new_tokens, max_length_passed):
    """A minimum length past the maximum one: no eos before the maximum, where generation stops anyway.
    transformers warns (a UserWarning, its words) rather than refuse; so does minilora (before: silent)."""
    longest = prompt_length + max_new_tokens
    advice = (" Generation will stop at the defined maximum length. You should decrease the minimum length and/or "
              "increase the maximum length.")
    if not max_length_passed:  # (transformers says so also when max_new_tokens set the maximum)
        advice += f" Note that `max_length` is set to {longest}, its default value."
    if min_length > longest:  # (min_length is min_new_tokens + the prompt when min_new_tokens is set)
        warnings.warn(f"Unfeasible length constraints: `min_length` ({min_length}) is larger than the maximum "
                      f"possible length ({longest})." + advice, UserWarning)
    if min_new_tokens and prompt_length + min_new_tokens > longest:
        warnings.warn(f"Unfeasible length constraints: `min_new_tokens` ({min_new_tokens}), when added to the "
                      f"prompt length ({prompt_length}), is larger than the maximum possible length ({longest})."
                      + advice, UserWarning)


def _warn_unused_sampling_options(**options):
    """Greedy decoding takes the most likely token: temperature, top_k, top_p and min_p change nothing. Say
    so when the call set one away from its default (transformers warns the same way), rather than ignore it."""
    _warn_unused_options("do_sample is not True", "only apply to sampling", **options)


def _warn_unused_options(reason, what_for, **options):
    """The options the call set away from their default that ``reason`` makes useless: warned about, as
    transformers' "generation flags are not valid and may be ignored"."""
    unused = [f"{name}={value!r}" for name, value in options.items()
              if value is not DEFAULT and value is not None and value != DEFAULTS[name]]
    if unused:
        warnings.warn(f"{reason}: {', '.join(unused)} {what_for} and change nothing here; leave them unset "
                      "(transformers warns the same)")


def _mass_filter_or_off(mass):
    """``top_p`` / ``typical_p`` as generate() applies them: a mass of 1 or more keeps every token, so the filter
    is off -- transformers adds those warpers only below 1 (``top_p=1.5`` samples as ``top_p=1.0``). The filter
    functions themselves refuse such a mass, as transformers' warpers do."""
    is_number = isinstance(mass, (int, float, np.number)) and not isinstance(mass, (bool, np.bool_))
    return None if is_number and mass >= 1.0 else mass


def _check_sampling_options(do_sample, repetition_penalty, num_return_sequences, streamer, batch, num_beams=1,
                            early_stopping=False):
    if isinstance(repetition_penalty, bool) or not isinstance(repetition_penalty, (int, float)) \
            or not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be a number > 0, got {repetition_penalty!r}")
    if isinstance(num_return_sequences, bool) or not isinstance(num_return_sequences, (int, np.integer)) \
            or num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be an integer >= 1, got {num_return_sequences!r}")
    _check_count("num_beams", num_beams, minimum=1)
    if early_stopping not in (None, True, False, "never"):  # checked with or without beams, as transformers
        raise ValueError(f"`early_stopping` must be a boolean or 'never', but is {early_stopping}.")
    if num_beams > 1:
        _check_beam_options(do_sample, num_return_sequences, streamer, num_beams)
    elif num_return_sequences > 1 and not do_sample:
        raise ValueError("Greedy methods (do_sample != True) without beam search do not support "
                         f"`num_return_sequences` different than 1 (got {num_return_sequences}).")
    if streamer is not None and batch * num_return_sequences > 1:
        raise ValueError("a streamer takes one sequence at a time (batch size 1), as in transformers")


def _warn_past_positions(config, length):
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and length > limit:
        warnings.warn(f"generating up to {length} tokens, past the model's max_position_embeddings "
                      f"({limit}): positions it was never trained on; expect degraded text")


class TextStreamer:
    """Prints the generated text as it comes (transformers' ``TextStreamer``):
    ``model.generate(ids, streamer=TextStreamer(tok, skip_prompt=True), max_new_tokens=40)``.

    The text of everything received so far is decoded again at each token, and the new part is
    printed by transformers 5's rules, so ``on_finalized_text`` gets the same pieces as there:
    at a newline, everything (and only the last token is kept as context); after a CJK character,
    everything; when the new part is only letters, digits and spaces, all of it (long words stream
    too); otherwise -- a symbol, perhaps half a character (``\ufffd``) -- up to the last space."""

    def __init__(self, tokenizer, skip_prompt=False, **decode_kwargs):
        self.tokenizer, self.skip_prompt, self.decode_kwargs = tokenizer, skip_prompt, decode_kwargs
        self.tokens, self.printed, self.next_tokens_are_prompt = [], 0, True

    def put(self, value):
        value = np.asarray(value)
        if value.ndim > 1 and value.shape[0] > 1:
            raise ValueError("TextStreamer only supports batch size 1")
        if self.skip_prompt and self.next_tokens_are_prompt:  # the first call carries the prompt
            self.next_tokens_are_prompt = False
            return
        self.tokens.extend(int(i) for i in value.reshape(-1))
        text = self.tokenizer.decode(self.tokens, **self.decode_kwargs)
        new = text[self.printed:]
        if text.endswith("\n"):
            self.tokens = self.tokens[-1:]  # the last token stays, as context for the next line's spaces
            self.printed = len(self.tokenizer.decode(self.tokens, **self.decode_kwargs))
        elif (text and _is_cjk(text[-1])) or all(c.isspace() or unicodedata.category(c)[0] in "LMN" for c in new):
            self.printed += len(new)
        else:
            new = text[self.printed:text.rfind(" ") + 1]
            self.printed += len(new)
        self.on_finalized_text(new)

    def end(self):
        rest = self.tokenizer.decode(self.tokens, **self.decode_kwargs)[self.printed:] if self.tokens else ""
        self.tokens, self.printed, self.next_tokens_are_prompt = [], 0, True
        self.on_finalized_text(rest, stream_end=True)

    def on_finalized_text(self, text, stream_end=False):
        print(text, flush=True, end="" if not stream_end else None)


class TextIteratorStreamer(TextStreamer):
    """The generated text as an iterator (transformers' ``TextIteratorStreamer``), for a generate() running in
    another thread: ``for piece in streamer: ...`` gets the pieces ``TextStreamer`` would print, and ends
    with the generation. ``timeout`` (seconds) bounds each wait (``queue.Empty`` past it)."""

    def __init__(self, tokenizer, skip_prompt=False, timeout=None, **decode_kwargs):
        import queue
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue, self.stop_signal, self.timeout = queue.Queue(), None, timeout

    def on_finalized_text(self, text, stream_end=False):
        self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self):
        value = self.text_queue.get(timeout=self.timeout)
        if value is self.stop_signal:
            raise StopIteration()
        return value


_CJK_BLOCKS = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(char):
    """A CJK ideograph: these are words of their own, printed at once (transformers' rule)."""
    return any(low <= ord(char) <= high for low, high in _CJK_BLOCKS)


def _check_count(name, value, minimum=0):
    """A count argument must be a whole number >= ``minimum``: 2.5 tokens, True or "3" are refused, not rounded."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _as_int_array(values, name):
    """Token ids or a 0/1 mask as an int64 array; floats like 2.5 are refused, not truncated."""
    array = np.asarray(values.cpu().numpy() if isinstance(values, Tensor) else values)
    if name == "attention_mask" and array.dtype.kind == "f":  # transformers reads a float mask as mask != 0
        array = array != 0
    if array.size and array.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def _id_list(ids):
    """The eos id(s) as a list, in the order given (the first one pads finished rows)."""
    ids = _plain_ids(ids)
    if ids is None:
        return []
    return [int(i) for i in ids] if isinstance(ids, (list, tuple, set)) else [int(ids)]


def _position_ids(prompt_mask, length):
    """transformers' position ids for the prompt and the tokens generated after it, ``length`` in all: a
    prompt token's position counts the real tokens up to it (so a left-padded row starts at 0; padding
    itself is 0), and each new token is one past the token before it -- also after right padding, which
    transformers does not skip (a right-padded prompt is a mistake it warns about, not a way to pad)."""
    prompt = np.where(prompt_mask == 0, 0, np.cumsum(prompt_mask, axis=1) - 1)
    new = prompt[:, -1:] + np.arange(1, length - prompt.shape[1] + 1)
    return np.concatenate([prompt, new], axis=1)


def _mask_arg(mask):
    """The attention mask to pass on: ``None`` when nothing is padded (cheaper)."""
    return None if mask.all() else mask
