"""Beam search as vLLM's OpenAI server runs it for ``use_beam_search: true`` (``OpenAIServing.beam_search``): not
inside the engine but over it, one token a step. Each step every live beam asks for its ``2 * beam_width``
likeliest tokens (the logprobs, which also hold the token the beam's one-token request sampled at the request's
temperature); each candidate's score is its beam's summed log-probability divided by the length of its tokens
(prompt included, an EOS not counted) to the ``length_penalty``; the best ``beam_width`` candidates that are not EOS
go on, those that are EOS are completed. After ``max_tokens`` steps the best ``beam_width`` of the completed and the
live beams are the ``n`` choices, best first.

The forwards reuse keys and values as vLLM's prefix cache lets its beam requests do (``_BeamCache``): the prompt is
prefilled once, and each step computes one new position per live beam over its parent's cached ones (the parents'
rows gathered, so beams that share a prefix share its computation), in one batched forward run on the engine
thread between decode steps. A search of ``max_tokens`` steps costs P + the live beams of each later step in
forward tokens, where prefilling every beam again cost the whole of every beam each step.
"""
import asyncio
import collections
import contextlib
import functools

import numpy as np

from .batch import last_logits
from .engine import EngineError, Request

__all__ = ["Beam", "beam_search"]


class Beam(collections.namedtuple("Beam", "tokens cum_logprob finish_reason stop_reason logprobs")):
    """A hypothesis: its tokens (prompt first), summed log-probability, how it ended (None: still live) and each
    step's candidates ``{token: logprob}`` (vLLM's logprobs of a beam: what its answer's logprobs are read from)."""

    def score(self, eos, length_penalty):
        """vLLM's get_beam_search_score (transformers' length normalisation)."""
        length = len(self.tokens) - (self.tokens[-1] == eos)
        return self.cum_logprob / (length ** length_penalty)


class _BeamCache:
    """The live beams' keys and values, one row per beam, all of one length (they grow together). Its methods run
    on the engine thread: ``prefill`` the prompt, then ``extend`` row i of the new live beams, the old row
    ``parents[i]``, by ``tokens[i]``; each returns the next-token logits [rows, vocab]. ``tokens_computed``
    counts the positions run through the model.

    The adapter is ``holder``'s (Engine.hold), as vLLM's search carries the LoRARequest it began with: unloaded
    meanwhile, the search goes on with it (vLLM's engine loads a request's adapter again from its path); reloaded
    in place (load_inplace: the same adapter id, new weights), the next step runs the new weights over the whole
    of each beam, as vLLM's next one-token request does -- the cached keys and values of the old weights are not
    reused (vLLM's prefix cache may reuse them, vllm#42125, a bug its fixes remove)."""

    def __init__(self, engine, holder):
        self.engine, self.holder, self.key, self.cache, self.tokens_computed = engine, holder, None, None, 0

    def _forward(self, ids, **kwargs):
        self.tokens_computed += ids.size
        self.key = self.holder.adapter_key
        logits, self.cache = last_logits(self.engine.model, ids, [self.key] * len(ids), **kwargs)
        return logits

    def prefill(self, prompt_ids):
        return self._forward(np.asarray([prompt_ids], dtype=np.int64))

    def extend(self, parents, tokens, sequences):
        """``sequences``: the new live beams' whole tokens (prompt first), run again when the weights changed."""
        if self.holder.adapter_key != self.key:
            return self._forward(np.asarray(sequences, dtype=np.int64))
        if list(parents) != list(range(len(self.cache.keys[0]))):
            self.cache.reorder_cache(parents)
        return self._forward(np.asarray(tokens, dtype=np.int64)[:, None], past_key_values=self.cache)


def _candidates(engine, logits, width, temperature):
    """``{token: logprob}`` of a beam's next-token ``logits``: the token its one-token request samples first, then
    the ``2 * width`` likeliest (vLLM's logprobs dict), as the engine samples a request (Request.sample)."""
    request = Request([], max_tokens=1, temperature=temperature, logprobs=2 * width)
    request.sample(logits, engine.eos | engine.generation_eos, engine.text_vocab)
    (token, logprob, top), = request.token_logprobs
    return {token: logprob, **{t: lp for t, lp in top if t != token}}


async def beam_search(engine, prompt_ids, adapter, width, max_tokens, temperature=1.0, length_penalty=1.0,
                      ignore_eos=False, include_stop_str_in_output=False, client_gone=None):
    """The ``width`` best Beams after ``prompt_ids``, best first (vLLM's OpenAIServing.beam_search); None when
    ``client_gone()`` (awaited between steps) says the client left: the search stops there, as vLLM aborts it."""
    holder = engine.hold(adapter)
    try:
        return await _search(engine, holder, prompt_ids, width, max_tokens, temperature, length_penalty, ignore_eos,
                             include_stop_str_in_output, client_gone)
    finally:  # (on the engine thread: the last holder of an unloaded adapter takes it out of the model)
        with contextlib.suppress(EngineError):  # a server stopping: nothing runs any more
            engine.between_steps(functools.partial(engine.release, holder))


async def _search(engine, holder, prompt_ids, width, max_tokens, temperature, length_penalty, ignore_eos,
                  include_stop_str_in_output, client_gone):
    eos = engine.tokenizer.eos_token_id
    live, completed = [Beam(list(prompt_ids), 0.0, None, None, [])], []
    cache, forward = _BeamCache(engine, holder), functools.partial(_between_steps, engine)
    for step in range(max_tokens):
        if client_gone is not None and await client_gone():
            return None
        if step == 0:
            logits = await forward(cache.prefill, prompt_ids)
        else:
            logits = await forward(cache.extend, parents, [beam.tokens[-1] for beam in live],
                                   [beam.tokens for beam in live])
        grown = []  # (beam, the row of its parent)
        for row, beam in enumerate(live):
            candidates = _candidates(engine, logits[row], width, temperature)
            steps = beam.logprobs + [candidates]
            for token, logprob in candidates.items():
                if token == eos and not ignore_eos:
                    tokens = beam.tokens + [token] if include_stop_str_in_output else beam.tokens
                    completed.append(Beam(tokens, beam.cum_logprob + logprob, "stop", eos, steps))
                else:
                    grown.append((Beam(beam.tokens + [token], beam.cum_logprob + logprob, None, None, steps), row))
        grown = sorted(grown, key=lambda pair: pair[0].score(eos, length_penalty), reverse=True)[:width]
        live, parents = [beam for beam, _ in grown], [row for _, row in grown]
        if not live:
            break
    best = sorted(completed + live, key=lambda b: b.score(eos, length_penalty), reverse=True)[:width]
    return [beam._replace(finish_reason=beam.finish_reason or "length") for beam in best]


async def _between_steps(engine, fn, *args):
    """``fn(*args)`` run on the engine thread between its decode steps, awaited."""
    return await asyncio.wrap_future(engine.between_steps(functools.partial(fn, *args)))
