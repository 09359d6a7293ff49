"""Beam search as vLLM's OpenAI server runs it for ``use_beam_search: true`` (``OpenAIServing.beam_search``): not
inside the engine but over it, one token a step. Each step sends every live beam to the engine as a one-token
request asking for its ``2 * beam_width`` likeliest tokens (the logprobs, which also hold the token the request
sampled at the request's temperature); each candidate's score is its beam's summed log-probability divided by the
length of its tokens (prompt included, an EOS not counted) to the ``length_penalty``; the best ``beam_width``
candidates that are not EOS go on, those that are EOS are completed. After ``max_tokens`` steps the best
``beam_width`` of the completed and the live beams are the ``n`` choices, best first.

(vLLM's prefix cache makes each step's prompt cheap there; here each step prefills again, which the shipped model's
size allows.)
"""
import asyncio
import collections
import functools

from .engine import Request

__all__ = ["Beam", "beam_search"]


class Beam(collections.namedtuple("Beam", "tokens cum_logprob finish_reason stop_reason logprobs")):
    """A hypothesis: its tokens (prompt first), summed log-probability, how it ended (None: still live) and each
    step's candidates ``{token: logprob}`` (vLLM's logprobs of a beam: what its answer's logprobs are read from)."""

    def score(self, eos, length_penalty):
        """vLLM's get_beam_search_score (transformers' length normalisation)."""
        length = len(self.tokens) - (self.tokens[-1] == eos)
        return self.cum_logprob / (length ** length_penalty)


async def _candidates(engine, beams, adapter, width, temperature):
    """Per beam, ``{token: logprob}`` of one engine step: the token it sampled first, then the ``2 * width``
    likeliest (vLLM's logprobs dict)."""
    loop = asyncio.get_running_loop()
    done = [loop.create_future() for _ in beams]
    jobs = [Request(beam.tokens, adapter, max_tokens=1, temperature=temperature, logprobs=2 * width)
            for beam in beams]
    for job, future in zip(jobs, done):
        job.emit = functools.partial(_finished, loop, future)
    engine.submit_all(jobs)
    try:
        await asyncio.gather(*done)
    finally:
        for job in jobs:
            job.cancel()
    candidates = []
    for job in jobs:
        (token, logprob, top), = job.token_logprobs
        candidates.append({token: logprob, **{t: lp for t, lp in top if t != token}})
    return candidates


def _finished(loop, future, kind, value):
    """A beam request's ``emit``: its one token is in (``done``), or the engine failed it (``error``)."""
    if kind == "done":
        loop.call_soon_threadsafe(lambda: future.done() or future.set_result(None))
    elif kind == "error":
        loop.call_soon_threadsafe(lambda: future.done() or future.set_exception(RuntimeError(value[1])))


async def beam_search(engine, prompt_ids, adapter, width, max_tokens, temperature=1.0, length_penalty=1.0,
                      ignore_eos=False, include_stop_str_in_output=False, client_gone=None):
    """The ``width`` best Beams after ``prompt_ids``, best first (vLLM's OpenAIServing.beam_search); None when
    ``client_gone()`` (awaited between steps) says the client left: the search stops there, as vLLM aborts it."""
    eos = engine.tokenizer.eos_token_id
    live, completed = [Beam(list(prompt_ids), 0.0, None, None, [])], []
    for _ in range(max_tokens):
        if client_gone is not None and await client_gone():
            return None
        grown = []
        for beam, candidates in zip(live, await _candidates(engine, live, adapter, width, temperature)):
            steps = beam.logprobs + [candidates]
            for token, logprob in candidates.items():
                if token == eos and not ignore_eos:
                    tokens = beam.tokens + [token] if include_stop_str_in_output else beam.tokens
                    completed.append(Beam(tokens, beam.cum_logprob + logprob, "stop", eos, steps))
                else:
                    grown.append(Beam(beam.tokens + [token], beam.cum_logprob + logprob, None, None, steps))
        live = sorted(grown, key=lambda b: b.score(eos, length_penalty), reverse=True)[:width]
    best = sorted(completed + live, key=lambda b: b.score(eos, length_penalty), reverse=True)[:width]
    return [beam._replace(finish_reason=beam.finish_reason or "length") for beam in best]
