"""The OpenAI-compatible HTTP API over an ``Engine`` (Starlette; ``pip install minilora[serve]``).

Routes (vLLM's names for the adapter routes)::

    GET  /v1/models                  the base model and every loaded adapter
    POST /v1/completions             {"model", "prompt", "max_tokens", "temperature", "top_p", "seed",
                                      "stop", "stream", "top_k"}; "model" names an adapter or the base
    POST /v1/chat/completions        {"model", "messages", ...} (only if the tokenizer has a chat template)
    POST /v1/load_lora_adapter       {"lora_name", "lora_path"}
    POST /v1/unload_lora_adapter     {"lora_name"}
    GET  /health

Sampling defaults are OpenAI's and vLLM's, not transformers' ``generate``: ``temperature`` 1, ``top_p`` 1
and no top-k filter (vLLM's extra ``top_k``: 0 or -1 keeps every token, as vLLM; ``minilora generate``
and ``generate()`` keep transformers' top-k 50) -- unless the model folder's generation_config.json sets
them (and ``max_new_tokens``, the default ``max_tokens``), which vLLM applies too. ``stream: true``
answers with server-sent events (``data: {chunk}`` lines, then ``data: [DONE]``).
Errors are OpenAI's JSON, ``{"error": {"message", "type", "param", "code"}}``, with a 4xx status that
says whose fault it is: 400 bad parameters, 404 unknown model, 409 adapter in use, 429 busy.
A client that disconnects cancels its request: the engine frees its batch slot at the next step.
"""
import asyncio
import contextlib
import json
import time
import uuid

from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from .engine import EngineError, Request

__all__ = ["create_app"]

_COMPLETION_KEYS = {"model", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "n", "user",
                    "top_k"}
_CHAT_KEYS = (_COMPLETION_KEYS - {"prompt", "max_tokens"}) | {"messages", "max_tokens", "max_completion_tokens"}
_POLL_SECONDS = 0.25  # how often a waiting non-streaming request checks whether its client is still there


def _error(status, message, param=None):
    kind = {404: "NotFoundError", 409: "ConflictError", 429: "RateLimitError"}.get(status, "invalid_request_error")
    if status >= 500:
        kind = "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}},
                        status_code=status)


def _number(body, name, default, low, high, integer=False):
    value = body.get(name, default)
    if value is None:
        return default
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise EngineError(400, f"{name} must be {what} in [{low}, {high}], got {value!r}", name)
    return value


def _options(body, allowed, default_max_tokens, defaults):
    """The sampling options shared by both endpoints, checked as OpenAI's API documents them. Anything
    else (logprobs, logit_bias, stream_options, ...) is refused by name rather than ignored. What the
    request leaves out comes from ``defaults`` (the engine's: OpenAI's, or the model's generation_config)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise EngineError(400, f"unsupported parameter(s) {unknown}", unknown[0])
    if body.get("n", 1) != 1:
        raise EngineError(400, "only n=1 is supported", "n")
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise EngineError(400, "stop must be a string or a list of at most 4 strings", "stop")
    if not isinstance(body.get("stream", False), bool):
        raise EngineError(400, "stream must be true or false", "stream")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    top_k = _number(body, "top_k", defaults["top_k"] or 0, -1, 2**31 - 1, integer=True)  # vLLM's: 0, -1 = all
    max_tokens = _number({"max_tokens": max_tokens}, "max_tokens", defaults["max_tokens"] or default_max_tokens,
                         1, 1 << 20, integer=True)
    return dict(max_tokens=max_tokens,
                temperature=_number(body, "temperature", defaults["temperature"], 0, 2),
                top_p=_number(body, "top_p", defaults["top_p"], 1e-9, 1),
                top_k=top_k if top_k > 0 else None,
                seed=_number(body, "seed", None, 0, 2**63 - 1, integer=True), stop=stop)


class _Server:
    def __init__(self, engine, model_name):
        self.engine, self.model_name = engine, model_name
        self.created = int(time.time())

    # --- helpers -------------------------------------------------------------------------------
    async def _json(self, request):
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise EngineError(400, "the request body must be JSON") from None
        if not isinstance(body, dict):
            raise EngineError(400, "the request body must be a JSON object")
        return body

    def _adapter_of(self, body):
        model = body.get("model")
        if not isinstance(model, str):
            raise EngineError(400, "model is required: the base model's name or an adapter's", "model")
        if model == self.model_name:
            return None
        if model not in self.engine.adapters():
            raise EngineError(404, f"the model {model!r} does not exist; models: "
                                   f"{[self.model_name] + self.engine.adapters()}", "model")
        return model

    async def _run(self, http_request, body, prompt_ids, chat):
        """Submit, then answer as one JSON object or as a stream of server-sent events."""
        # OpenAI's defaults: 16 tokens for a completion; a chat reply may use the rest of the context.
        room = (self.engine.max_model_len or len(prompt_ids) + 16) - len(prompt_ids)
        options = _options(body, _CHAT_KEYS if chat else _COMPLETION_KEYS, max(room, 1) if chat else 16,
                           self.engine.sampling_defaults)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def emit(kind, value):  # called on the engine thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                job.cancel()

        job = Request(prompt_ids, self._adapter_of(body), emit=emit, **options)
        self.engine.submit(job)
        meta = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": body["model"]}
        if body.get("stream", False):
            return StreamingResponse(self._stream(job, events, meta, chat), media_type="text/event-stream")
        return await self._collect(http_request, job, events, meta, chat)

    async def _collect(self, http_request, job, events, meta, chat):
        text = ""
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(events.get(), _POLL_SECONDS)
                except asyncio.TimeoutError:
                    if await http_request.is_disconnected():
                        return _error(499, "the client disconnected")
                    continue
                if kind == "text":
                    text += value
                elif kind == "error":
                    return _error(*value)
                else:
                    return JSONResponse(self._body(meta, chat, text, value, job, final=True))
        finally:
            job.cancel()  # a no-op once finished; frees the slot if the client went away

    async def _stream(self, job, events, meta, chat):
        try:
            if chat:
                yield _sse({**meta, "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}]})
            while True:
                kind, value = await events.get()
                if kind == "text":
                    yield _sse(self._body(meta, chat, value, None, job))
                elif kind == "error":
                    yield _sse({"error": {"message": value[1], "type": "server_error", "param": None, "code": value[0]}})
                    break
                else:
                    yield _sse(self._body(meta, chat, "", value, job))
                    break
            yield "data: [DONE]\n\n"
        finally:  # also when the client disconnects (Starlette cancels this generator)
            job.cancel()

    @staticmethod
    def _body(meta, chat, text, finish_reason, job, final=False):
        if chat:
            piece = {"message": {"role": "assistant", "content": text}} if final else {"delta": {"content": text} if text else {}}
            obj = "chat.completion" if final else "chat.completion.chunk"
        else:
            piece, obj = {"text": text}, "text_completion"
        body = {**meta, "object": obj, "choices": [{"index": 0, **piece, "logprobs": None, "finish_reason": finish_reason}]}
        if final:
            n_in, n_out = len(job.prompt_ids), len(job.generated)
            body["usage"] = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
        return body

    # --- routes --------------------------------------------------------------------------------
    async def models(self, request):
        def card(name, parent):
            return {"id": name, "object": "model", "created": self.created, "owned_by": "minilora",
                    "root": name, "parent": parent}
        return JSONResponse({"object": "list", "data": [card(self.model_name, None)]
                             + [card(a, self.model_name) for a in self.engine.adapters()]})

    async def completions(self, request):
        body = await self._json(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str) and prompt:
            ids = _encoded(lambda: self.engine.tokenizer.encode(prompt), "prompt")
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            ids = prompt  # token ids, as OpenAI's API allows
            if max(ids) >= self.engine.vocab_size or min(ids) < 0:
                raise EngineError(400, f"prompt token ids must be in [0, {self.engine.vocab_size})", "prompt")
        else:
            raise EngineError(400, "prompt must be a non-empty string or a list of token ids (one prompt per request)",
                              "prompt")
        return await self._run(request, body, ids, chat=False)

    async def chat_completions(self, request):
        tok = self.engine.tokenizer
        if getattr(tok, "chat_template", None) is None:
            raise EngineError(404, "this model's tokenizer has no chat template: use /v1/completions")
        body = await self._json(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise EngineError(400, "messages must be a non-empty list of {\"role\": str, \"content\": str}", "messages")
        ids = _encoded(lambda: tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False),
                       "messages")
        return await self._run(request, body, list(ids), chat=True)

    async def load_adapter(self, request):
        body = await self._json(request)
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(path, str):
            raise EngineError(400, "lora_path (a PEFT adapter folder on the server) is required", "lora_path")
        if name == self.model_name:
            raise EngineError(400, f"{name!r} is the base model's name", "lora_name")
        await asyncio.to_thread(self.engine.load_adapter, name, path)
        return JSONResponse({"status": "ok", "message": f"adapter {name!r} loaded"})

    async def unload_adapter(self, request):
        body = await self._json(request)
        await asyncio.to_thread(self.engine.unload_adapter, body.get("lora_name"))
        return JSONResponse({"status": "ok", "message": f"adapter {body.get('lora_name')!r} unloaded"})

    async def health(self, request):
        return JSONResponse({"status": "ok", "running": len(self.engine.rows), "queued": len(self.engine.waiting)})


def _encoded(encode, param):
    """Tokenize; JSON may carry a lone surrogate ("\\udcff"), which is no text any tokenizer encodes: a 400."""
    try:
        return encode()
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end].encode("unicode_escape").decode()
        raise EngineError(400, f"{param} is not valid Unicode text: it holds {bad} (a lone surrogate)", param) from None


def _sse(obj):
    return f"data: {json.dumps(obj)}\n\n"


def _guarded(handler):
    """An engine refusal becomes OpenAI's error JSON with its status."""
    async def route(request):
        try:
            return await handler(request)
        except EngineError as exc:
            return _error(exc.status, exc.message, exc.param)
    return route


def create_app(engine, model_name="base"):
    """A Starlette app serving ``engine``; the engine thread starts with the app and stops with it."""
    server = _Server(engine, model_name)
    routes = [Route("/v1/models", _guarded(server.models), methods=["GET"]),
              Route("/v1/completions", _guarded(server.completions), methods=["POST"]),
              Route("/v1/chat/completions", _guarded(server.chat_completions), methods=["POST"]),
              Route("/v1/load_lora_adapter", _guarded(server.load_adapter), methods=["POST"]),
              Route("/v1/unload_lora_adapter", _guarded(server.unload_adapter), methods=["POST"]),
              Route("/health", _guarded(server.health), methods=["GET"])]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if not engine.started:
            engine.start()
        yield
        await asyncio.to_thread(engine.shutdown)

    return Starlette(routes=routes, lifespan=lifespan)
