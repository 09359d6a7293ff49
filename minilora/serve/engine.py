"""The continuous-batching scheduler: one thread owns the model and runs decode steps; requests join
between steps and leave when done.

One loop iteration of ``Engine._run``::

    1. run queued commands (load / unload an adapter): they change the model, so only between steps
    2. drop the rows whose client went away (``Request.cancel()``): the slot is free at once
    3. admit waiting requests while the batch has room: prefill each alone, then it joins the batch
    4. one decode step for the whole batch (every row, whatever its adapter), sample, send tokens
    5. rows that finished (EOS, a stop string, max_tokens) leave

Bounds, as vLLM's scheduler has them: at most ``max_batch_size`` rows decode together (vLLM's
``max_num_seqs`` per step); the rest wait, first come first served. ``submit_all`` takes one HTTP
request's sequences (prompts x n) whole, however many: they queue for free rows as vLLM's waiting
queue holds them, and each is answered as if sent alone. ``max_queue`` bounds the backlog *across*
requests (back-pressure against many clients; vLLM's queue has no bound): a request that arrives while
``max_batch_size + max_queue`` sequences are running or waiting gets ``EngineError(429)`` and queues
nothing; one that arrives below it is taken whole, so the backlog is at most that bound plus one
request. A request talks back through ``Request.emit``:
one ``("text", delta)`` event per token (``""`` while its text is held back; ``finished`` is already set
on the last one), then ``("done", finish_reason)`` or ``("error", (status, message))``.
"""
import collections
import concurrent.futures
import itertools
import logging
import os
import re
import threading
import time

import numpy as np

from ..lora.layers import BASE_ADAPTER
from ..random import Generator
from ..tensor import no_grad
from .batch import RaggedBatch
from .detokenizer import IncrementalDetokenizer
from .sampler import processed_logits, sample_token

__all__ = ["Engine", "EngineError", "Request", "validation_error"]

_MODULE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")  # an adapter's key in the model: no dots, no '__base__'


class EngineError(Exception):
    """A request the engine refuses, with the HTTP status that says why (400, 404, 429, 503); ``kind``: the error
    type vLLM names where it is not the status's usual one (its "InvalidUserInput" of the adapter routes)."""

    def __init__(self, status, message, param=None, kind=None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


class VLLMValidationError(ValueError):
    """vLLM's VLLMValidationError (vllm/exceptions.py): a ValueError naming the parameter (and value) a check
    refused; its text carries them, ``"top_p must be in (0, 1], got 0.0. (parameter=top_p, value=0.0)"``."""

    def __init__(self, message, *, parameter=None, value=None):
        super().__init__(message)
        self.parameter, self.value = parameter, value

    def __str__(self):
        extras = [f"{key}={item}" for key, item in (("parameter", self.parameter), ("value", self.value))
                  if item is not None]
        return f"{super().__str__()} ({', '.join(extras)})" if extras else super().__str__()


def validation_error(message, parameter=None, value=None):
    """A request vLLM's serving code refuses with VLLMValidationError, as its create_error_response answers it:
    the error's text as the message and its parameter as param (None where the check names none, as vLLM's
    SamplingParams range checks mostly do)."""
    return EngineError(400, str(VLLMValidationError(message, parameter=parameter, value=value)), parameter)


class Request:
    """One completion: prompt ids, the adapter (None: the base), sampling options, and where events go.

    ``emit(kind, value)`` is called from the engine thread; the HTTP side passes a function that
    hands the event to its event loop. ``cancel()`` (a disconnected client) frees the slot.
    """

    _ids = itertools.count()

    def __init__(self, prompt_ids, adapter=None, max_tokens=16, temperature=1.0, top_p=1.0, seed=None,
                 stop=(), emit=None, top_k=None, presence_penalty=0.0, frequency_penalty=0.0,
                 repetition_penalty=1.0, logit_bias=None, logprobs=None, stop_token_ids=(), ignore_eos=False,
                 min_p=0.0, min_tokens=0, include_stop_str_in_output=False, skip_special_tokens=True,
                 allowed_token_ids=None, grammar=None, bad_words_ids=()):
        self.id = next(self._ids)
        self.prompt_ids = list(prompt_ids)
        self.adapter = adapter
        self.max_tokens, self.temperature, self.top_p = max_tokens, temperature, top_p
        self.top_k = top_k  # None: every token, as OpenAI's API and vLLM sample by default
        # vLLM's per-request torch.Generator, manual_seed(seed) (a negative seed wraps to 64 bits, as
        # torch's); unseeded: one seeded from the OS, as the global stream vLLM draws those from
        self.generator = Generator()
        self.generator.seed() if seed is None else self.generator.manual_seed(seed)
        self.stop = [s for s in stop if s]
        self.stop_token_ids, self.ignore_eos = set(stop_token_ids), ignore_eos  # vLLM's extras
        self.min_p, self.min_tokens = min_p, min_tokens
        self.include_stop_str_in_output, self.skip_special_tokens = include_stop_str_in_output, skip_special_tokens
        self.presence_penalty, self.frequency_penalty = presence_penalty, frequency_penalty
        self.repetition_penalty = repetition_penalty
        self.logit_bias = dict(logit_bias or {})  # {token id: added to its logit}
        self.allowed_token_ids = allowed_token_ids  # None: every id; else only these are sampled (vLLM's)
        self.grammar = grammar  # structured outputs (structured.Grammar): the tokens it takes next, or None
        self.bad_words_ids = [list(word) for word in bad_words_ids]  # vLLM's bad_words, as token ids
        self.logprobs = logprobs  # None: none; k: the chosen token's log-probability and the k likeliest
        self.token_logprobs = []  # (token, its logprob, [(id, logprob)] top k) per generated token
        self.emit = emit or (lambda kind, value: None)
        self.generated = []   # token ids so far
        self.detokenizer = None  # an IncrementalDetokenizer, made by the engine at the first token
        self.stop_reason = None  # vLLM's: the stop string or stop_token_id that ended it (EOS: None)
        self.adapter_key = None  # the adapter's key in the model, fixed when the engine takes the request
        self.cancelled = False
        self.finished = False

    def cancel(self):
        self.cancelled = True

    def sample(self, logits, eos=(), text_vocab=None):
        """The next token, picked as vLLM's v1 sampler picks it (see sampler.py): greedy below a
        temperature of 1e-5, else the exponential race over this request's generator; ``eos`` and the
        stop tokens cannot come before ``min_tokens`` (vLLM's all_stop_token_ids: the EOS too with
        ignore_eos); only ids below ``text_vocab`` (None: all) are picked. Log-probabilities are the
        model's own: a log_softmax over its whole vocabulary, before penalties and temperature, as vLLM
        reports them by default (a structured output's grammar mask applied: _logits_sampled_from)."""
        x = processed_logits(logits, self, self.stop_token_ids | set(eos), text_vocab)
        token = sample_token(x, self.temperature, self.generator, self.top_k, self.top_p, self.min_p)
        if self.logprobs is not None:
            self._record_logprobs(self._logits_sampled_from(logits), token)
        return token

    def _logits_sampled_from(self, logits):
        """The logits vLLM's sampler is handed, whose log_softmax its logprobs report ("raw_logprobs"): the
        model's, with a structured output's grammar bitmask already applied (its model runner masks the logits in
        place before the sampler), so a token the grammar rules out has logprob -inf and the allowed ones share
        the whole probability."""
        if self.grammar is None:
            return logits
        masked = np.array(logits, copy=True)
        self.grammar.mask(masked)
        return masked

    def _record_logprobs(self, logits, token):
        self.token_logprobs.append(logprob_entry(logits, token, self.logprobs))


class AdapterHold:
    """What holds an adapter besides a request (Engine.hold): the name asked for and the model's key serving it."""

    def __init__(self, adapter, adapter_key):
        self.adapter, self.adapter_key = adapter, adapter_key


def logprob_entry(logits, token, k):
    """``(token, its log-probability, [(id, logprob)] of the k likeliest)`` under ``logits`` [vocab]."""
    return _top_logprobs(_log_softmax(logits), token, k)


def ranked_logprob_entry(logits, token, k):
    """``logprob_entry`` and the token's rank: how many ids are at least as likely (itself included), as
    vLLM's ``batched_count_greater_than`` counts it for prompt_logprobs."""
    logprobs = _log_softmax(logits)
    return (*_top_logprobs(logprobs, token, k), int((logprobs >= logprobs[token]).sum()))


def _log_softmax(logits):
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def _top_logprobs(logprobs, token, k):
    top = np.argsort(-logprobs, kind="stable")[:k]
    return token, float(logprobs[token]), [(int(t), float(logprobs[t])) for t in top]


class Engine:
    """Owns the model and its adapters; serves ``Request``s in continuous batches on a thread.

    ``model``: a causal LM, or a ``PeftModel`` holding the adapters (named as requests name them).
    ``tokenizer``: encodes prompts and decodes the streamed text. ``start()`` runs the loop on a
    thread; ``shutdown()`` stops it, failing what is still queued or running with 503.
    """

    def __init__(self, model, tokenizer, max_batch_size=8, max_queue=32, max_model_len=None, max_lora_rank=None):
        if max_batch_size < 1 or max_queue < 0:
            raise ValueError(f"max_batch_size must be >= 1 and max_queue >= 0, got {max_batch_size}, {max_queue}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.max_lora_rank = max_lora_rank  # None: any rank (vLLM's --max-lora-rank bounds it)
        config = getattr(self._base(), "config", None)
        limit = getattr(config, "max_position_embeddings", None)
        if max_model_len is not None and limit is not None and max_model_len > limit:
            raise ValueError(f"max_model_len {max_model_len} is longer than the model's max_position_embeddings "
                             f"({limit}): positions it was never trained on (vLLM refuses it too)")
        self.max_model_len = max_model_len or limit
        self.sampling_defaults = _sampling_defaults(getattr(self._base(), "generation_config", None))
        self.vocab_size = getattr(config, "vocab_size", None)
        # A model's vocabulary is often padded past the tokenizer's (to a multiple of 64, say): those
        # ids are no text, so they are never sampled.
        # (len(tokenizer): its added tokens too -- a chat model's end-of-turn token is usually one.)
        sizes = [v for v in (self.vocab_size, _token_count(tokenizer)) if v is not None]
        self.text_vocab = min(sizes) if sizes else None
        eos = getattr(tokenizer, "eos_token_id", None)
        self.eos = set() if eos is None else {eos}
        # vLLM's update_from_generation_config: the model's generation_config eos_token_id(s) other than
        # the tokenizer's stop a request as its stop_token_ids do (unless ignore_eos; stop_reason: the id)
        self.generation_eos = _generation_eos(getattr(self._base(), "generation_config", None)) - self.eos
        self.batch = RaggedBatch(self.model)
        for name in sorted(getattr(self.model, "peft_config", {})):  # refused now, not at a request (see _load)
            problem = self._unservable(name)
            if problem:
                self.batch.close()
                raise ValueError(f"adapter {name!r} cannot be served: {problem}")
        self.rows = []  # the Request of each batch row
        self.waiting = collections.deque()
        self.commands = collections.deque()  # (function, future): run between decode steps
        self.in_use = collections.Counter()  # adapter key -> requests queued or running with it
        self._draining = set()  # keys of adapters unloaded while requests used them: deleted when the last leaves
        self.holds = set()  # AdapterHolds: a beam search's adapter, held between its steps as a request holds one
        self.steps = collections.deque(maxlen=1000)  # (step number, adapter of each row): batch composition
        self.tokens_generated = 0
        self._lock = threading.Condition()
        # name a request uses -> the adapter's key in the model (vLLM serves any name, "org/sql-lora.v2";
        # a module key cannot hold a dot): the same but for names a key cannot be
        self._keys = {name: name for name in getattr(self.model, "peft_config", {})}
        self._adapter_names = tuple(sorted(self._keys))
        self.adapter_paths = {}  # name -> the folder it was loaded from (vLLM lists it as the model's root)
        self._thread = None
        self._stopping = False
        self.failure = None  # why the loop died (the model raised), for /health

    # --- adapters ------------------------------------------------------------------------------
    def _base(self):
        return self.model.get_base_model() if hasattr(self.model, "peft_config") else self.model

    def adapters(self):
        """Names of the loaded adapters (a snapshot: HTTP threads read it while the engine thread loads)."""
        return list(self._adapter_names)

    def load_adapter(self, name, path, replace=False):
        """Load the PEFT adapter folder ``path`` as ``name``, between decode steps (blocks until done).
        ``replace`` (vLLM's ``load_inplace``): a loaded ``name`` is served from ``path`` from now on, the requests
        in flight with it included, as vLLM reloads the weights of the adapter's id (_move_holders); without it, a
        loaded name is refused."""
        if not isinstance(name, str) or not name.strip():
            raise EngineError(400, f"lora_name must be a non-empty string, got {name!r}", "lora_name")
        return self._call(lambda: self._load(name, path, replace))

    def _key(self, adapter):
        """The model's key of the adapter a request names (None: the base model)."""
        return None if adapter is None else self._keys[adapter]

    def _new_key(self, name):
        """A key in the model for a new adapter served as ``name``: the name itself where it can be one,
        else the name with '_' for what a module key cannot hold, numbered until no adapter has it."""
        taken = set(self._keys.values()) | self._draining
        if _MODULE_KEY.match(name) and name not in taken:
            return name
        stem = re.sub(r"[^A-Za-z0-9_\-]", "_", name).lstrip("_-") or "adapter"
        return next(key for key in (f"{stem}_{i}" for i in itertools.count(1)) if key not in taken)

    def _load(self, name, path, replace=False):
        from ..lora import PeftModel
        from ..lora.config import CONFIG_NAME
        if name in self.adapters() and not replace:
            raise EngineError(400, f"The lora adapter '{name}' has already been loaded. If you want to load the "
                                   "adapter in place, set 'load_inplace' to True.", "lora_name",
                              kind="InvalidUserInput")
        key = self._new_key(name)  # (a name loaded again: another key; the old one stays until it is retired)
        if not os.path.isfile(os.path.join(path, CONFIG_NAME)):  # vLLM's NotFoundError (a corrupt one: 400)
            raise EngineError(404, f"Loading lora {name} failed: No adapter found for {path} (no {CONFIG_NAME} "
                                   "there)", "lora_path")
        try:
            if hasattr(self.model, "peft_config"):
                self.model.load_adapter(path, adapter_name=key)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=key).eval()
        except (OSError, ValueError, KeyError, TypeError, NotImplementedError, MemoryError) as exc:
            # (MemoryError: a config's rank of 10**9 asks for 60 GiB of lora_A -- the request's fault, and the
            # model is left as it was: the adapter's layers go when its loading fails)
            raise EngineError(400, f"cannot load adapter {name!r} from {path!r}: {exc}", "lora_path") from None
        self.model.eval()
        self.batch.adapters_changed(self.model)  # new layers, new stacks
        problem = self._unservable(key)
        if problem:  # take it out again: the model stays as it was
            if len(self.model.peft_config) == 1:
                self.batch.close()
                self.model = self.model.base_model._restore_base_model()  # (unload() keeps trained modules_to_save)
            else:
                self.model.delete_adapter(key)
            self.batch.adapters_changed(self.model)
            raise EngineError(400, f"cannot serve adapter {name!r} from {path!r}: {problem}", "lora_path")
        with self._lock:  # (a request names it from now on: submit reads the keys under this lock)
            replaced = self._keys.get(name)
            self._keys[name] = key
            self._adapter_names = tuple(sorted(self._keys))
            self.adapter_paths[name] = path
        if replaced is not None:
            self._move_holders(replaced, key)
            self._retire(replaced)

    def _move_holders(self, old, new):
        """vLLM's load_inplace reloads the weights of the name's adapter id, which every request naming it carries:
        what is queued, running or between beam-search steps with the ``old`` key runs the ``new`` weights from
        now on (a running row keeps the keys and values it computed, as vLLM's running request does)."""
        with self._lock:
            holders = [h for h in [*self.waiting, *self.rows, *self.holds] if h.adapter_key == old]
            for holder in holders:
                holder.adapter_key = new
            self.in_use[old] -= len(holders)
            self.in_use[new] += len(holders)
        for row, request in enumerate(self.rows):
            self.batch.adapters[row] = request.adapter_key

    def _unservable(self, name):
        """Why adapter ``name`` cannot run as a per-row adapter (DoRA and VeRA cannot, as in PEFT), or None.

        One token through the model with ``adapter_names=[name]`` finds out now: found at its first
        request instead, the error would stop the engine and fail every request in flight."""
        config = self.model.peft_config[name]
        ranks = [getattr(config, "r", 0)] + list((getattr(config, "rank_pattern", None) or {}).values())
        if self.max_lora_rank is not None and max(ranks) > self.max_lora_rank:
            return f"its rank {max(ranks)} is above --max-lora-rank {self.max_lora_rank}"
        try:
            with no_grad():
                self.model(np.zeros((1, 1), np.int64), adapter_names=[name])
        except (ValueError, NotImplementedError) as exc:
            return str(exc)
        return None

    def unload_adapter(self, name):
        """Stop serving adapter ``name``, as vLLM's unload does: a request naming it from now on is a 404, while
        the requests already queued or running with it finish with it (vLLM forgets the name and leaves the
        adapter to its requests); its weights leave the model with the last of them."""
        return self._call(lambda: self._unload(name))

    def _unload(self, name):
        with self._lock:  # under submit's lock: no request for it can slip in after this
            if name not in self._adapter_names:
                raise EngineError(404, f"The lora adapter '{name}' cannot be found.", "lora_name")
            key = self._keys.pop(name)
            self._adapter_names = tuple(sorted(self._keys))
            self.adapter_paths.pop(name, None)
        self._retire(key)

    def _retire(self, key):
        """Adapter ``key`` is served under no name any more (run on the engine thread, after the name went under
        the lock, so no request takes it again): it leaves the model now, or with its last request in flight."""
        if self.in_use[key]:
            self._draining.add(key)
        else:
            self._delete_adapter(key)

    def _delete_adapter(self, key):
        """Take adapter ``key`` out of the model (the last one: back to the plain base model)."""
        if len(self.model.peft_config) == 1:
            self.batch.close()
            self.model = self.model.base_model._restore_base_model()  # (unload() keeps trained modules_to_save)
        else:
            self.model.delete_adapter(key)
        self.batch.adapters_changed(self.model)

    def hold(self, adapter):
        """An AdapterHold of ``adapter`` (None: the base), for work run outside the batch over several steps (beam
        search): as a queued request's, the adapter stays while held, unloaded or not, and follows an in-place
        reload. ``release`` it on the engine thread."""
        with self._lock:
            if adapter is not None and adapter not in self._adapter_names:
                raise EngineError(404, model_not_found(adapter), "model")
            holder = AdapterHold(adapter, self._key(adapter))
            self.in_use[holder.adapter_key] += 1
            self.holds.add(holder)
        return holder

    def release(self, holder):
        with self._lock:
            self.holds.discard(holder)
        self._release(holder)

    def _release(self, request):
        """``request`` (queued or running, or an AdapterHold) no longer holds its adapter: an unloaded one goes with
        its last holder."""
        key = request.adapter_key
        self.in_use[key] -= 1
        if key in self._draining and not self.in_use[key]:
            self._draining.discard(key)
            self._delete_adapter(key)

    def _call(self, fn):
        """Run ``fn`` on the engine thread between steps (directly when the loop is not running)."""
        return self.between_steps(fn).result(timeout=120)

    def between_steps(self, fn):
        """A ``concurrent.futures.Future`` of ``fn()``, run on the engine thread between decode steps (run now when
        the loop is not running): what uses the model outside the batch, as beam search's forwards. A 503 once the
        server is stopping."""
        future = concurrent.futures.Future()
        if self._thread is None or not self._thread.is_alive():
            self._run_command(fn, future)
            return future
        with self._lock:
            if self._stopping:  # (the loop fails what it has not run: nothing would run this)
                raise EngineError(503, "the server is shutting down")
            self.commands.append((fn, future))
            self._lock.notify()
        return future

    # --- requests ------------------------------------------------------------------------------
    def prompt_logprobs(self, prompt_ids, adapter, k, held_by=None):
        """``ranked_logprob_entry`` of each prompt token after the first, given the ones before it (one forward
        over the prompt, run between decode steps): the prompt's log-likelihood, as ``echo`` with ``logprobs``
        and vLLM's ``prompt_logprobs`` ask for it. Over the model's whole vocabulary: a prompt may hold any of
        its ids. ``held_by``: a queued request for the same adapter (its adapter stays while it is held, even
        if unloaded meanwhile)."""
        check_context(self.max_model_len, len(prompt_ids), 0)
        return self._call(lambda: self._prompt_logprobs(prompt_ids, adapter, k, held_by))

    def _prompt_logprobs(self, prompt_ids, adapter, k, held_by):
        key = held_by.adapter_key if held_by is not None else self._keys.get(adapter)
        if adapter is not None and key not in getattr(self.model, "peft_config", {}):  # unloaded since it came in
            raise EngineError(404, model_not_found(adapter), "model")
        names = {"adapter_names": [BASE_ADAPTER if key is None else key]} if hasattr(self.model, "peft_config") else {}
        with no_grad():
            logits = self.model(np.asarray(prompt_ids, dtype=np.int64)[None, :], **names).logits
        logits = logits.numpy(force=True)[0].astype(np.float64)
        return [ranked_logprob_entry(logits[i - 1], prompt_ids[i], k) for i in range(1, len(prompt_ids))]

    def submit(self, request):
        """Queue ``request``; raises EngineError for an unknown adapter, a prompt too long, or a full queue."""
        self.submit_all([request])
        return request

    def submit_all(self, requests):
        """Queue every one of ``requests`` (the sequences of one HTTP request, any number) or none of them.
        A 429 when the backlog (running + waiting) is already at ``max_batch_size + max_queue``; below it
        the whole group is taken, so a request larger than the bound (lm-evaluation-harness sends 64
        prompts at once) is served as vLLM serves it, rather than refused at any load. A refusal (429
        included) leaves nothing queued, so a client that retries it -- OpenAI's retries a 429 -- does
        not have the choices that did fit generated twice."""
        for request in requests:
            self._check(request)
        with self._lock:
            if self._stopping:
                raise EngineError(503, "the server is shutting down")
            for request in requests:
                if request.adapter is not None and request.adapter not in self._adapter_names:
                    raise EngineError(404, model_not_found(request.adapter), "model")
            if len(self.rows) + len(self.waiting) >= self.max_batch_size + self.max_queue:
                raise EngineError(429, f"the server is busy ({len(self.rows)} running, {len(self.waiting)} "
                                       "queued); try again later")
            for request in requests:
                request.adapter_key = self._key(request.adapter)
                self.waiting.append(request)
                self.in_use[request.adapter_key] += 1
            self._lock.notify()
        return requests

    def _check(self, request):
        """Refuse a request that could never run (empty, or longer than the context): a 400."""
        if not request.prompt_ids:
            raise EngineError(400, "The decoder prompt cannot be empty", "prompt")  # (vLLM's words)
        check_context(self.max_model_len, len(request.prompt_ids), request.max_tokens)

    def health(self):
        """None while requests are served, else why not (the model failed, or the server is stopping)."""
        if self.failure is not None:
            return f"the engine stopped: {self.failure}"
        return "the server is shutting down" if self._stopping else None

    @property
    def started(self):
        return self._thread is not None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="minilora-engine", daemon=True)
        self._thread.start()
        return self

    def shutdown(self, timeout=30.0):
        """Stop after the current step; everything queued or running gets an error (503)."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        self.batch.close()  # the model is the caller's again (it may be trained: no stale adapter stacks)

    # --- the loop ------------------------------------------------------------------------------
    def _run(self):
        try:
            while True:
                with self._lock:
                    while not (self._stopping or self.commands or self.waiting or self.rows):
                        self._lock.wait(timeout=1.0)
                    if self._stopping:
                        break
                    commands, self.commands = list(self.commands), collections.deque()
                for fn, future in commands:
                    self._run_command(fn, future)
                self._drop_cancelled()
                self._admit()
                if self.rows:
                    self._step()
        except BaseException as exc:  # the model failed: fail every request rather than hang them
            self.failure = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._stopping = True  # and refuse new ones (503): nobody would serve them
            self._fail_all(500, f"the engine stopped: {type(exc).__name__}: {exc}")
            logging.getLogger("minilora.serve").exception("the engine stopped")  # the traceback, for the operator
            return
        self._fail_all(503, "the server is shutting down")

    @staticmethod
    def _run_command(fn, future):
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    def _drop_cancelled(self):
        """Free the slots of requests whose client went away: running rows, and queued ones too (else a
        client that gave up still holds a queue slot, and its adapter stays in use, until admitted)."""
        with self._lock:
            gone = [request for request in self.waiting if request.cancelled]
            for request in gone:
                self.waiting.remove(request)
                self._release(request)
        for row in reversed(range(len(self.rows))):
            if self.rows[row].cancelled:
                self._leave(row)

    def _admit(self):
        while len(self.rows) < self.max_batch_size:
            with self._lock:
                if not self.waiting:
                    return
                request = self.waiting.popleft()
            if request.cancelled:
                self._release(request)
                continue
            self.rows.append(request)  # counted as running from now on (submit's bound)
            logits = self.batch.add(request.prompt_ids, request.adapter_key)
            self._take(len(self.rows) - 1, logits)

    def _step(self):
        self.steps.append((len(self.steps), [r.adapter for r in self.rows]))
        logits = self.batch.step([r.generated[-1] for r in self.rows])
        for row in range(len(self.rows)):
            self._take(row, logits[row], leave=False)
        for row in reversed(range(len(self.rows))):
            if self.rows[row].finished:
                self._leave(row)

    def _take(self, row, logits, leave=True):
        """Sample row's next token, send the new text, and mark the request finished when it is: as
        vLLM's check_stop (an EOS or a stop_token_id stops it before max_tokens does), then its
        detokenizer (a stop string found in the new text stops it too, whatever ended it)."""
        request = self.rows[row]
        token = request.sample(logits, self.eos | self.generation_eos, self.text_vocab)
        if request.grammar is not None:
            request.grammar.accept(token)
        request.generated.append(token)
        self.tokens_generated += 1
        reason = None
        if token in self.eos and not request.ignore_eos:
            reason = "stop"
        elif token in request.stop_token_ids or (token in self.generation_eos and not request.ignore_eos):
            reason, request.stop_reason = "stop", token
        elif len(request.generated) >= request.max_tokens:
            reason = "length"
        if request.detokenizer is None:
            request.detokenizer = self._detokenizer(request)
        stop = request.detokenizer.update(token, stop_terminated=reason == "stop")
        if stop is not None:
            reason, request.stop_reason = "stop", stop
        text = request.detokenizer.next_delta(finished=reason is not None)
        request.finished = reason is not None
        request.emit("text", text)  # every token, "" while its text is held back: vLLM streams each step
        if reason is not None:
            request.emit("done", reason)
            if leave:
                self._leave(row)

    def _detokenizer(self, request):
        return IncrementalDetokenizer(self.tokenizer, request.prompt_ids, request.skip_special_tokens, self.text_vocab,
                                      request.stop, request.include_stop_str_in_output, request.min_tokens)

    def _leave(self, row):
        request = self.rows.pop(row)
        self.batch.remove(row)
        self._release(request)

    def _fail_all(self, status, message):
        with self._lock:
            pending = self.rows + list(self.waiting)
            self.waiting.clear()
            commands, self.commands = list(self.commands), collections.deque()
        for request in pending:
            if not request.finished:
                request.finished = True
                request.emit("error", (status, message))
        for _, future in commands:
            future.set_exception(EngineError(status, message))
        self.rows = []
        self.batch.close()
        self.batch = RaggedBatch(self.model)


def check_context(max_model_len, prompt_tokens, max_tokens, field="max_tokens", from_text=False):
    """vLLM 0.24's context checks of a request (vllm/renderers/params.py ``TokenizeParams``), in its words, which
    clients parse to retry with a smaller max_tokens: ``max_tokens`` (the output tokens asked for; 0 when none
    were: the rest of the context) past the context is refused by the ``field`` the client sent, then a prompt
    longer than the room left beside it (``input_tokens``). vLLM tokenizes a text prompt (``from_text``) cut at
    one token past that room, so it reports such a prompt as "at least" that long."""
    if max_model_len is None:
        return
    if max_tokens > max_model_len:
        raise validation_error(f"{field}={max_tokens} cannot be greater than max_model_len=max_total_tokens="
                               f"{max_model_len}. Please request fewer output tokens.", field, max_tokens)
    room = max_model_len - max_tokens
    if prompt_tokens > room:
        at_least, prompt_tokens = ("at least ", room + 1) if from_text else ("", prompt_tokens)
        raise validation_error(f"This model's maximum context length is {max_model_len} tokens. However, you "
                               f"requested {max_tokens} output tokens and your prompt contains {at_least}"
                               f"{prompt_tokens} input tokens, for a total of {at_least}{prompt_tokens + max_tokens} "
                               "tokens. Please reduce the length of the input prompt or the number of requested "
                               "output tokens.", "input_tokens", prompt_tokens)


def check_characters(max_model_len, characters, max_tokens, max_chars_per_token):
    """vLLM 0.24's check of a text prompt before it is tokenized (TokenizeParams._text_len_check): more characters
    than the room beside ``max_tokens`` holds at the tokenizer's longest vocabulary entry (its max_chars_per_token)
    cannot fit, so it is refused without tokenizing, in vLLM's words (its number is a count of characters)."""
    if max_model_len is None or not max_chars_per_token:
        return
    room = max_model_len - max_tokens
    bound = room * max_chars_per_token
    if characters > bound:
        raise validation_error(f"This model's maximum context length is {max_model_len} tokens. However, you "
                               f"requested {max_tokens} output tokens and your prompt contains {characters} characters "
                               f"(more than {bound} characters, which is the upper bound for {room} input tokens). "
                               "Please reduce the length of the input prompt or the number of requested output "
                               "tokens.", "input_text", characters)


def model_not_found(name):
    """vLLM's words for a request naming a model it does not serve (an adapter never loaded, or unloaded)."""
    return f"The model `{name}` does not exist."


def _generation_eos(generation_config):
    """The ids of a generation_config's ``eos_token_id`` (an int or a list; none: empty)."""
    eos = getattr(generation_config, "eos_token_id", None)
    return set() if eos is None else {eos} if isinstance(eos, int) else set(eos)


def _token_count(tokenizer):
    """Every id the tokenizer can decode, added tokens included (``len(tok)``, as transformers)."""
    try:
        return len(tokenizer)
    except TypeError:  # a tokenizer without __len__: its vocab_size, if it has one
        return getattr(tokenizer, "vocab_size", None)


# A request's sampling defaults: OpenAI's (and vLLM's), unless the model's generation_config.json sets
# one -- vLLM's default --generation-config auto applies the model's file the same way, for these
# options only (its get_diff_sampling_param): the file's other settings do not reach a request.
OPENAI_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": None, "min_p": 0.0, "repetition_penalty": 1.0,
                   "max_tokens": None}


def _sampling_defaults(generation_config):
    """OPENAI_DEFAULTS with what the model's generation_config sets (its max_new_tokens is max_tokens)."""
    own = generation_config.to_dict() if generation_config is not None else {}
    picked = {name: own.get(name) for name in ("temperature", "top_p", "min_p", "repetition_penalty")}
    picked.update(top_k=own.get("top_k") or None, max_tokens=own.get("max_new_tokens"))
    return {**OPENAI_DEFAULTS, **{k: v for k, v in picked.items() if v is not None}}


def wait_until(condition, timeout=10.0, interval=0.01):
    """Poll ``condition()`` until true or ``timeout`` seconds pass (for tests and the benchmark)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
