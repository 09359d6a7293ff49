"""Assisted decoding (transformers' ``_assisted_decoding``): a cheap source drafts a few tokens, the model
checks them all in one forward pass, and keeps the ones it agrees with plus one of its own.

    out = model.generate(ids, assistant_model=small, max_new_tokens=40)          # speculative decoding
    out = model.generate(ids, prompt_lookup_num_tokens=10, max_new_tokens=40)    # prompt lookup decoding

The drafts come from

* an assistant model (``_AssistantDrafts``): a smaller model with the same vocabulary generates up to
  ``num_assistant_tokens`` tokens with the call's processors, stopping early at an eos id or when its
  chosen token's probability falls below ``assistant_confidence_threshold``. Both are read from the
  assistant's ``generation_config`` (transformers' defaults 20 and 0.4); ``num_assistant_tokens_schedule``
  ``"heuristic"`` adds 2 after a round whose drafts were all accepted, else takes 1 off, and keeps the
  count on the assistant's config after the call (``"heuristic_transient"``: for this call only). Where
  scikit-learn is installed, transformers moves the threshold during the call to the one that best separates
  the drafts kept from those rejected so far (a ROC curve's, false negatives costing 3); so does minilora,
  with scikit-learn's ``roc_curve``, when it is there;
* the prompt itself (``_PromptLookup``): the latest ``max_matching_ngram_size``-gram (default 2) is looked
  up earlier in the sequence and the ``prompt_lookup_num_tokens`` tokens that followed it are the draft.

Greedy decoding keeps the drafted tokens up to the first one that differs from the model's argmax, so the
answer is plain greedy decoding's. Sampling with an assistant is speculative sampling (transformers'
``_speculative_sampling``: a drafted token is kept with probability ``min(1, p/q)``, torch's ``rand``
draws, and the token after the last kept one is drawn from ``max(p - q, 0)``); without draft scores
(prompt lookup) every position's token is drawn from the model's scores and compared. The draws come
from the same generator as transformers', in its order, so a seed gives its tokens. One prompt at a time
(batch size 1), as transformers.
"""
import importlib.util

import numpy as np

from .. import random as _random
from ..tensor import no_grad
from .generation import _inferred_mask, _mask_arg, _position_ids, _softmax

# transformers' defaults for the assistant's own generation_config
ASSISTANT_DEFAULTS = {"num_assistant_tokens": 20, "num_assistant_tokens_schedule": "constant",
                      "assistant_confidence_threshold": 0.4}


def _assistant_option(assistant, name):
    value = getattr(getattr(assistant, "generation_config", None), name, None)
    return ASSISTANT_DEFAULTS[name] if value is None else value


class _AssistantDrafts:
    """transformers' AssistedCandidateGenerator: the assistant continues the sequence with its own KV cache,
    rolled back to the tokens the model kept before each round."""

    def __init__(self, assistant, min_length, max_length, prompt_mask, pad_token_id, ensemble_weight=None):
        self.assistant, self.min_length, self.max_length = assistant, min_length, max_length
        self.pad_token_id, self.ensemble_weight = pad_token_id, ensemble_weight
        self.num_tokens = _assistant_option(assistant, "num_assistant_tokens")
        self.schedule = _assistant_option(assistant, "num_assistant_tokens_schedule")
        self.threshold = _assistant_option(assistant, "assistant_confidence_threshold")
        self.prompt_mask, self.cache, self.last_length = prompt_mask, None, 0
        # the drafts' probabilities and whether the model kept them, for the threshold's ROC curve
        self.adapting = bool(self.threshold) and importlib.util.find_spec("sklearn") is not None
        self.probabilities, self.kept = [], []

    def candidates(self, ids, rules):
        """(the ids followed by the drafted tokens, the draft's scores [1, drafted, vocab] or None)."""
        length = ids.shape[1]
        most = min(int(self.num_tokens), self.max_length - length - 1)
        if most == 0:
            return ids, None
        if self.cache is not None and self.last_length > length:
            self.cache.crop(length - self.last_length)  # the drafts the model did not keep
        drafted, scores = ids, []
        mask = self._round_mask(ids, rules.eos)
        for _ in range(most):
            start = self.cache.get_seq_length() if self.cache is not None else 0
            with no_grad():
                out = self.assistant(**_inputs(drafted, self.prompt_mask, start, mask), past_key_values=self.cache,
                                     use_cache=True)
            self.cache = out.past_key_values
            step_scores = rules.assistant_scores(out.logits[:, -1, :].cpu().numpy().astype(np.float32), drafted)
            token = rules.choose(step_scores)
            drafted = np.concatenate([drafted, token[:, None]], axis=1)
            scores.append(step_scores)
            if self._stops(token, step_scores, rules.eos):
                break
        self.last_length = drafted.shape[1]
        scores = np.stack(scores, axis=1)
        if self.adapting:
            tokens = drafted[0, ids.shape[1]:]
            self.probabilities.extend(_softmax(scores[0])[np.arange(len(tokens)), tokens].tolist())
        return drafted, scores

    def _round_mask(self, ids, eos):
        """The mask the assistant's generate runs with: the prompt's when it pads, else -- transformers drops an
        all-ones mask, so its assistant's generate infers one again each round -- 0 wherever the ids so far hold
        the pad id (unless it is an eos id): a generated token equal to the pad id is masked out."""
        if not self.prompt_mask.all():
            return self.prompt_mask
        return _inferred_mask(ids, self.pad_token_id, eos)

    def _stops(self, token, step_scores, eos):
        """The assistant's stopping criteria: an eos id, or (ConfidenceCriteria) too little confidence."""
        if np.isin(token, eos).any():
            return True
        return self.threshold is not None and self.threshold > 0 and \
            _softmax(step_scores)[0, token[0]] < self.threshold

    def update(self, matches, drafted):
        """transformers' update_candidate_strategy: the next round's draft length."""
        if self.schedule in ("heuristic", "heuristic_transient"):
            self.num_tokens = self.num_tokens + 2 if matches == drafted else max(1, self.num_tokens - 1)
        if self.adapting:
            self._adapt_threshold(matches)

    def _adapt_threshold(self, matches):
        """transformers' update_candidate_strategy with scikit-learn: the threshold minimising fpr + 3 fnr."""
        self.kept.extend([1] * matches)
        if len(self.probabilities) > len(self.kept):
            self.kept.append(0)
        del self.probabilities[len(self.kept):]
        if len(self.probabilities) > 5 and {0, 1} <= set(self.kept):
            from sklearn.metrics import roc_curve
            false_positives, true_positives, thresholds = roc_curve(self.kept, self.probabilities)
            self.threshold = thresholds[np.argmin(false_positives + 3 * (1 - true_positives))]

    def finish(self):
        """``"heuristic"``: the count reached is the assistant's from now on (transformers keeps it too)."""
        if self.schedule == "heuristic":
            self.assistant.generation_config.num_assistant_tokens = self.num_tokens


class _PromptLookup:
    """transformers' PromptLookupCandidateGenerator: the tokens that followed an earlier occurrence of the
    sequence's latest n-gram (longest n first, leftmost occurrence first), cut before a token the call's
    processors forbid (-inf on dummy scores of ones) and before an eos id."""

    ensemble_weight = None  # (refused with prompt lookup: it has no draft scores)

    def __init__(self, num_output_tokens, max_matching_ngram_size, max_length, vocab_size):
        if max_matching_ngram_size <= 0 or num_output_tokens <= 0:
            raise ValueError("Invalid max_matching_ngram_size or num_output_tokens")
        self.num_tokens, self.ngram_size = num_output_tokens, max_matching_ngram_size
        self.max_length, self.vocab_size = max_length, vocab_size

    def candidates(self, ids, rules):
        length = ids.shape[1]
        if self.max_length == length + 1:
            return ids, None
        row = ids[0]
        for size in range(min(self.ngram_size, length - 1), 0, -1):
            windows = np.lib.stride_tricks.sliding_window_view(row, size)
            for index in np.flatnonzero((windows == row[-size:]).all(axis=1)):
                start = index + size
                end = min(start + self.num_tokens, length, self.max_length)
                if start >= end:
                    continue
                chosen = self._allowed(ids, row[start:end], rules)
                if len(chosen) == 0:
                    continue
                ends = np.flatnonzero(np.isin(chosen, rules.eos))
                chosen = chosen[:ends[0]] if len(ends) else chosen
                if len(chosen) == 0:
                    return ids, None
                return np.concatenate([ids, chosen[None, :]], axis=1), None
        return ids, None

    def update(self, matches, drafted):
        """(prompt lookup drafts the same number of tokens every round)"""

    def _allowed(self, ids, chosen, rules):
        dummy = np.ones((ids.shape[0], self.vocab_size), dtype=np.float32)
        lowest = np.finfo(np.float32).min
        for i, token in enumerate(chosen):
            score = rules.scores(dummy, np.concatenate([ids, chosen[None, :i]], axis=1))[0, token]
            if score == -np.inf or score == lowest:
                return chosen[:i]
        return chosen


def _inputs(ids, prompt_mask, start, mask=None):
    """The model's inputs for positions ``start`` on of ``ids``: positions counted as the prompt's mask says,
    attention by ``mask`` (default the prompt's), ones after it."""
    mask = prompt_mask if mask is None else mask
    mask = np.concatenate([mask, np.ones((ids.shape[0], ids.shape[1] - mask.shape[1]), dtype=mask.dtype)], axis=1)
    return {"input_ids": ids[:, start:], "attention_mask": _mask_arg(mask),
            "position_ids": _position_ids(prompt_mask, ids.shape[1])[:, start:]}


def speculative_sampling(drafted, draft_scores, scores, rng=None, ensemble_weight=None):
    """transformers' _speculative_sampling (algorithm 1 of arXiv 2211.17192): (kept tokens, how many drafts
    were kept). ``drafted`` [n] ids, ``draft_scores`` [n, vocab] the assistant's, ``scores`` [n + 1, vocab]
    the model's; ``rand(n)`` then one multinomial draw, from ``rng`` (default: the global generator).
    ``ensemble_weight`` w (DIVERSE's static ensemble): a draft is kept with probability 1 - w + w p/q."""
    count = len(drafted)
    q, p = _softmax(draft_scores), _softmax(scores)
    ratio = p[np.arange(count), drafted] / q[np.arange(count), drafted]
    if ensemble_weight is not None:
        ratio = 1.0 - ensemble_weight + ensemble_weight * ratio
    generator = _random.resolve(rng)
    accepted = generator.uniform((count,), np.float32) < ratio
    matches = int(np.cumprod(accepted).sum())
    if matches < count:
        residual = np.clip(p[matches] - q[matches], 0, None)
        total = residual.sum(dtype=np.float32)
        if ensemble_weight is not None and total <= np.finfo(np.float32).tiny:  # p == q: the model's own
            residual = p[matches]
        else:
            residual = residual / total
    else:
        residual = p[matches]
    from ..factories import _draw_by_exponential_race
    token = _draw_by_exponential_race(generator, residual[None, :], 1)[0]
    return np.concatenate([drafted[:matches], token]), matches


def assisted_decoding(model, ids, prompt_mask, rules, drafts, ending, streamer, cache, internals=None):
    """The decoding loop of transformers' _assisted_decoding for one prompt: (ids, per-token scores, per-token
    raw logits, the model's cache, {"hidden_states" / "attentions": per-token tuples} for the ``internals``
    wanted). ``rules`` turn logits into scores and choose (generate's _StepRules); ``ending(ids, scores)``
    says whether the row is done."""
    scores, raw_logits = [], []
    internals = {name: wanted for name, wanted in (internals or {}).items() if wanted}
    per_token = {name[len("output_"):]: () for name in internals}
    first = True
    while True:
        length = ids.shape[1]
        candidates, draft_scores = drafts.candidates(ids, rules)
        drafted = candidates.shape[1] - length
        start = cache.get_seq_length() if cache is not None else 0
        with no_grad():
            out = model(**_inputs(candidates, prompt_mask, start), past_key_values=cache, use_cache=True,
                        **internals)
        cache = out.past_key_values
        logits = out.logits[0, -drafted - 1:].cpu().numpy().astype(np.float32)[None]  # [1, drafted + 1, vocab]
        processed = np.stack([rules.scores(logits[:, i], candidates[:, :length + i]) for i in range(drafted + 1)],
                             axis=1)
        kept = _kept_tokens(candidates[0, length:], draft_scores, processed[0], rules, drafts.ensemble_weight)
        kept = kept[:drafts.max_length - length]
        ends = np.flatnonzero(np.isin(kept, rules.eos))
        kept = kept[:ends[0] + 1] if len(ends) else kept
        matches = len(kept) - 1
        ids = np.concatenate([ids, kept[None, :]], axis=1)
        if streamer is not None:
            streamer.put(kept[None, :])
        if drafted > matches:
            cache.crop(matches - drafted)  # the model's cache of the drafts it did not keep
        drafts.update(matches, drafted)
        scores.extend(processed[:, i] for i in range(matches + 1))
        raw_logits.extend(logits[:, i] for i in range(matches + 1))
        _add_per_token(per_token, out, length, ids.shape[1] if first else matches + 1)
        first = False
        if ending(ids, scores):
            break
    if streamer is not None:
        streamer.end()
    if isinstance(drafts, _AssistantDrafts):
        drafts.finish()
    return ids, scores, raw_logits, cache, per_token


def _add_per_token(per_token, out, length, added):
    """transformers' _split_model_outputs: the round's hidden states / attention weights, one tuple (a layer
    each) per kept token; the first round's first tuple holds the prompt's positions, and -- as there -- the
    ones after it count from the sequence's start again."""
    for name, collected in per_token.items():
        layers = getattr(out, name)
        if name == "attentions" and (not layers or layers[0] is None):
            continue  # (sdpa attention returns no weights: transformers keeps none)
        seen, count = length, added
        if not collected:
            collected += (tuple(layer[..., :seen, :seen] if name == "attentions" else layer[:, :seen]
                                for layer in layers),)
            seen, count = seen + 1, added - seen - 1
        for i in range(count):
            collected += (tuple(layer[..., i:i + 1, :seen + i] if name == "attentions" else layer[:, i:i + 1]
                                for layer in layers),)
        per_token[name] = collected


def _kept_tokens(drafted, draft_scores, processed, rules, ensemble_weight=None):
    """The drafted tokens the model agrees with, then its own next one (before the length / eos cuts). Greedy with
    ``ensemble_weight`` w compares the drafts with the argmax of w p + (1 - w) q instead of p's."""
    if rules.sampling and draft_scores is not None:
        return speculative_sampling(drafted, draft_scores[0], processed, rules.rng, ensemble_weight)[0]
    if rules.sampling is None and ensemble_weight is not None and draft_scores is not None:
        count = len(drafted)
        mixed = ensemble_weight * _softmax(processed[:count]) + (1.0 - ensemble_weight) * _softmax(draft_scores[0])
        chosen = np.concatenate([mixed.argmax(axis=-1), processed[count:].argmax(axis=-1)])
    else:
        chosen = rules.choose(processed)
    matches = int(np.cumprod(drafted == chosen[:-1]).sum())
    return chosen[:matches + 1]
