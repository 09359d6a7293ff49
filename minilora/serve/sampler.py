"""The next token of a request, as vLLM's v1 sampler picks it (vllm/v1/sample/sampler.py), on one row:

    1. the logits in float32; a structured-output request's grammar bitmask applied (structured.py: -inf on the
       tokens its grammar does not take next, as vLLM's apply_grammar_bitmask before its sampler); only
       ``allowed_token_ids`` kept, when a request names them; ``bad_words`` (vLLM's: a word's last token masked
       where the output so far ends with the rest of the word's tokens; a one-token word always)
    2. logits processors that can change a greedy pick: ``logit_bias`` added, then (before ``min_tokens``
       tokens) the stop tokens masked (vllm/v1/sample/logits_processor/builtin.py)
    3. penalties (vllm/model_executor/layers/utils.py ``apply_penalties``): repetition on every token
       of the prompt and the output (a positive logit times 1/penalty, a negative one times penalty),
       then ``frequency * count`` and ``presence * (count > 0)`` of the output subtracted
    4. temperature below 1e-5: the argmax (greedy; no random number is drawn). Else divided by it, then
       ``min_p`` (probabilities below min_p times the largest out), ``top_k`` then ``top_p``
       (vllm/v1/sample/ops/topk_topp_sampler.py ``apply_top_k_top_p``)
    5. the exponential race (``random_sample``): ``argmax(probs / q)`` with ``q`` a float32
       ``exponential_`` over the whole vocabulary from the request's own generator -- vLLM's
       ``torch.Generator`` seeded with the request's seed, so a seeded request draws torch's numbers.

minilora also masks the ids past the tokenizer (a padded vocabulary: no text) before step 2; they stay
in the race, so the generator draws what vLLM's does for the model's vocabulary.
"""
import numpy as np

from ..dtypes import float32
from ..factories import empty

__all__ = ["SAMPLING_EPS", "processed_logits", "sample_token"]

SAMPLING_EPS = 1e-5  # vLLM's _SAMPLING_EPS: a temperature below it is greedy sampling
_F32 = np.float32


def processed_logits(logits, request, stop_ids, text_vocab=None):
    """Steps 1-3 for ``request`` (its prompt, its tokens so far, its options); ``stop_ids`` are masked
    while fewer than ``min_tokens`` tokens have been generated."""
    x = np.array(logits, dtype=_F32)
    if text_vocab is not None:
        x[text_vocab:] = -np.inf
    if request.grammar is not None:
        request.grammar.mask(x)
    if request.allowed_token_ids is not None:
        banned = np.ones(len(x), bool)
        banned[request.allowed_token_ids] = False
        x[banned] = -np.inf
    _mask_bad_words(x, request.bad_words_ids, request.generated)
    if request.logit_bias:
        ids = np.array([t for t in request.logit_bias if t < len(x)], np.int64)
        x[ids] += np.array([request.logit_bias[t] for t in ids.tolist()], _F32)
    if len(request.generated) < request.min_tokens:
        x[[t for t in stop_ids if t < len(x)]] = -np.inf
    return apply_penalties(x, request.prompt_ids, request.generated, request.repetition_penalty,
                           request.frequency_penalty, request.presence_penalty)


def _mask_bad_words(x, bad_words_ids, output_ids):
    """vLLM's apply_bad_words: the last token of each bad word whose other tokens end the output so far."""
    for word in bad_words_ids:
        prefix = word[:-1]
        if len(prefix) <= len(output_ids) and list(output_ids[len(output_ids) - len(prefix):]) == prefix:
            x[word[-1]] = -np.inf


def apply_penalties(x, prompt_ids, output_ids, repetition, frequency, presence):
    """vLLM's ``apply_penalties`` on one float32 row (a no-op when every penalty is off, as its
    ``no_penalties``)."""
    if repetition == 1.0 and not frequency and not presence:
        return x
    size = len(x)
    counts = np.bincount(np.asarray(output_ids, np.int64), minlength=size)[:size]
    seen = (np.bincount(np.asarray(prompt_ids, np.int64), minlength=size)[:size] > 0) | (counts > 0)
    penalties = np.where(seen, _F32(repetition), _F32(1.0))
    x = x * np.where(x > 0, _F32(1.0) / penalties, penalties)  # (a multiply by 1/p, as vLLM's op)
    x = x - _F32(frequency) * counts.astype(_F32)
    return x - _F32(presence) * (counts > 0).astype(_F32)


def sample_token(x, temperature, generator, top_k=None, top_p=1.0, min_p=0.0):
    """Steps 4-5 on the processed float32 logits ``x``: the token id."""
    if temperature < SAMPLING_EPS:
        return int(np.argmax(x))
    x = x / _F32(temperature)
    if min_p:
        probs = softmax(x)
        x = np.where(probs < probs.max() * _F32(min_p), -np.inf, x).astype(_F32)
    x = top_k_top_p(x, top_k, top_p)
    q = empty(len(x), dtype=float32, device="cpu").exponential_(generator=generator).numpy()  # torch's numbers
    return int(np.argmax(softmax(x) / q))


def top_k_top_p(x, top_k=None, top_p=1.0):
    """vLLM's ``apply_top_k_top_p``: without top_p, the logits below the k-th largest masked; with it,
    on the logits sorted ascending: top-k's mask, then the tokens whose cumulative probability stays
    at or below 1 - top_p (the largest is always kept)."""
    top_k = top_k if top_k is not None and 0 < top_k < len(x) else None
    if top_p >= 1.0:
        if top_k is None:
            return x
        return np.where(x < np.partition(x, len(x) - top_k)[len(x) - top_k], -np.inf, x).astype(_F32)
    order = np.argsort(x, kind="stable")
    ranked = x[order]
    if top_k is not None:
        ranked[ranked < ranked[len(x) - top_k]] = -np.inf
    cumulative = np.cumsum(softmax(ranked), dtype=np.float64).astype(_F32)  # (torch's CPU cumsum adds in double)
    outside = cumulative <= _F32(1.0) - _F32(top_p)
    outside[-1] = False
    ranked[outside] = -np.inf
    out = np.empty_like(x)
    out[order] = ranked
    return out


def softmax(x):
    """float32 softmax of a row (torch's: exp of x - max, times 1/sum)."""
    e = np.exp(x - x.max())
    return e * (_F32(1.0) / e.sum(dtype=_F32))
