"""``minilora serve``: one base model, many LoRA adapters, an OpenAI-compatible API (vLLM's flags).

    minilora serve [MODEL] --adapter NAME=DIR [--adapter NAME=DIR ...] [--port 8000]

``MODEL`` is a Llama folder, as in ``vllm serve MODEL`` (or ``--model MODEL``; none: the shipped base).
vLLM's ``--lora-modules NAME=DIR ...``, ``--max-num-seqs``, ``--max-model-len``, ``--api-key`` and
``--trust-request-chat-template`` (a request's own chat template is refused without it) work
too. Then any OpenAI client works: ``model`` names an adapter (or the base, by its served name)::

    curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
         -d '{"model": "NAME", "prompt": "Q: Where does Dan Vend live?\\nA:", "max_tokens": 20}'
"""
import os
import threading
import time

__all__ = ["add_cli_arguments", "cli_main", "load_engine", "make_server", "serve_in_thread"]


def add_cli_arguments(parser, name):
    from ..cli import device_name, non_negative_int, port_number, positive_int
    where = ("a Llama folder (config.json + model.safetensors, and tokenizer.json if it has one); "
             "default: the base model shipped with minilora")
    parser.add_argument("model", nargs="?", default=None, metavar="MODEL", help=where + " (as `vllm serve MODEL`)")
    parser.add_argument("--model", dest="model_option", default=None, metavar="MODEL",
                        help="the same as MODEL (vLLM's --model)")
    parser.add_argument("--base", default=None, metavar="MODEL", help="deprecated: the same as MODEL")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                        help="a LoRA adapter folder served as model NAME (repeat for more)")
    parser.add_argument("--lora-modules", dest="adapter", action="extend", nargs="+", metavar="NAME=DIR",
                        help="vLLM's spelling: one or more NAME=DIR at once, or vLLM's JSON form "
                             "'{\"name\": NAME, \"path\": DIR}'")
    parser.add_argument("--enable-lora", action="store_true",
                        help="accepted for vLLM command lines; LoRA serving is always on here")
    parser.add_argument("--max-lora-rank", type=positive_int, default=None,
                        help="refuse adapters of a higher rank, as vLLM's (default: no bound; vLLM's is 16)")
    parser.add_argument("--trust-request-chat-template", action="store_true",
                        help="render a chat template a request sends (chat_template), as vLLM's flag; default: such "
                             "a request is refused (a template is a program the server runs)")
    parser.add_argument("--api-key", default=None, metavar="KEY",
                        help="require 'Authorization: Bearer KEY' on every /v1 request, as vLLM's --api-key "
                             "(OpenAI's clients send it for api_key=KEY); default: no key")
    parser.add_argument("--served-model-name", nargs="+", default=None, metavar="NAME",
                        help="the base model's name(s) in requests and /v1/models, as vLLM's: answers give the "
                             "name a request used (default: the MODEL folder's name, and MODEL as given, the name "
                             "vLLM would serve it under)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; vLLM listens on all "
                             "addresses, pass --host 0.0.0.0 for that)")
    parser.add_argument("--port", type=port_number, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--max-batch-size", "--max-num-seqs", dest="max_batch_size", type=positive_int, default=8,
                        help="requests decoded together in one forward pass (vLLM's --max-num-seqs; default 8)")
    parser.add_argument("--max-queue", type=non_negative_int, default=32,
                        help="sequences waiting for a batch slot before new requests get 429 (default 32); one "
                             "request's prompts x n are queued whole, however many")
    parser.add_argument("--max-model-len", type=positive_int, default=None,
                        help="longest prompt + completion, in tokens (default: the model's max_position_embeddings)")
    parser.add_argument("--device", type=device_name, default=None,
                        help="cpu, emu or cuda (default: $MINILORA_DEVICE or cpu)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "half", "float32", "float"],
                        help="the base model's dtype, as vLLM's --dtype: auto keeps the checkpoint's (the shipped "
                             "base is float32); LoRA adapters are float32 beside a 16-bit base, as PEFT makes them")


def _model_folder(args):
    """The one model folder named by MODEL, --model or the deprecated --base (None: the shipped base)."""
    import sys

    from ..cli import UsageError
    if args.base is not None:
        print("minilora serve: warning: --base is deprecated; name the model as vLLM does: "
              f"`minilora serve {args.base}` or --model {args.base}", file=sys.stderr)
    given = {(flag, value) for flag, value in (("MODEL", args.model), ("--model", args.model_option),
                                               ("--base", args.base)) if value is not None}
    if len({value for _, value in given}) > 1:
        raise UsageError("the model is named twice, differently: " +
                         ", ".join(f"{flag} {value}" for flag, value in sorted(given)))
    return next(iter(given))[1] if given else None


def _adapter_pairs(values):
    """(name, folder) of each --adapter / --lora-modules value: NAME=DIR, or vLLM's JSON object."""
    import json

    from ..cli import UsageError
    pairs = []
    for value in values:
        if value.lstrip().startswith("{"):
            try:
                module = json.loads(value)
            except ValueError as exc:
                raise UsageError(f"--lora-modules {value!r}: not valid JSON ({exc})") from None
            if not isinstance(module, dict) or not all(isinstance(module.get(k), str) for k in ("name", "path")):
                raise UsageError(f"--lora-modules {value!r}: vLLM's JSON form needs \"name\" and \"path\" strings")
            pairs.append((module["name"], module["path"]))
            continue
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--adapter takes NAME=DIR, got {value!r}")
        pairs.append((name, path))
    return pairs


def load_engine(base=None, adapters=(), device=None, max_batch_size=8, max_queue=32, max_model_len=None,
                dtype="float32", max_lora_rank=None):
    """(Engine, served model name) for a base folder (None: the shipped base) and (name, dir) adapters;
    ``dtype`` the base's (from_pretrained's: "auto" keeps the checkpoint's)."""
    from .. import models, tokenizer as tokenizers
    from .engine import Engine
    model = models.load_base(dtype=dtype, device=device) if base is None else \
        models.AutoModelForCausalLM.from_pretrained(base, dtype=dtype, device=device)  # (Llama, Mistral, Qwen2, Qwen3)
    tok = tokenizers.model_tokenizer(base)
    problem = tokenizers.vocab_mismatch(tok, model.config.vocab_size)
    if problem:  # replies would be another tokenizer's ids decoded as bytes (or a decode error mid-stream)
        hint = " (put the model's tokenizer.json in that folder)" if isinstance(tok, tokenizers.ByteTokenizer) else ""
        raise ValueError(f"{base}: {problem}{hint}")
    engine = Engine(model, tok, max_batch_size=max_batch_size, max_queue=max_queue, max_model_len=max_model_len,
                    max_lora_rank=max_lora_rank)
    for name, path in adapters:  # as /v1/load_lora_adapter loads them (any name vLLM takes: "org/sql.v2")
        engine.load_adapter(name, path)
    served = os.path.basename(os.path.normpath(base)) if base is not None else models.BASE_NAME
    return engine, served


def make_server(engine, model_name, host="127.0.0.1", port=8000, log_level="info", api_key=None, aliases=(),
                trust_request_chat_template=False):
    """A ``uvicorn.Server`` for the app that stops the engine FIRST when it shuts down: every request
    still queued or running ends at once with an error event (503), so no stream waits on a model
    that will never answer, and uvicorn's graceful wait finds the connections already closing."""
    import asyncio

    import uvicorn

    from .app import create_app

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            await asyncio.to_thread(engine.shutdown)
            await super().shutdown(sockets)

    app = create_app(engine, model_name, api_key=api_key, aliases=aliases,
                     trust_request_chat_template=trust_request_chat_template)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5, lifespan="on")
    return Server(config)


def serve_in_thread(server, timeout=30.0):
    """Run ``server`` (``make_server``'s) on a daemon thread; return the thread once it listens.

    The wait for readiness ends either way: a server thread that stops first (uvicorn exits when its
    port is taken) raises RuntimeError with its error at once, rather than being polled for until the
    deadline; no start within ``timeout`` seconds raises TimeoutError. (Tests, benchmarks, notebooks.)"""
    failure = []

    def run():
        try:
            server.run()
        except BaseException as exc:  # SystemExit too: uvicorn's answer to a port in use (logged above)
            failure.append(exc)
    thread = threading.Thread(target=run, name="minilora-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            why = f"{type(failure[0]).__name__}: {failure[0]}" if failure else "run() returned"
            raise RuntimeError(f"the server stopped before it started: {why}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server did not start listening within {timeout} s")
        time.sleep(0.01)
    return thread


def cli_main(args):
    from ..cli import UsageError
    from .engine import OPENAI_DEFAULTS, EngineError
    try:
        import starlette  # noqa: F401 -- only to say what is missing before loading a model
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError("minilora serve needs starlette and uvicorn: pip install 'minilora[serve]'") from None
    adapters, folder = _adapter_pairs(args.adapter), _model_folder(args)
    try:
        engine, served = load_engine(folder, adapters, args.device, args.max_batch_size, args.max_queue,
                                     args.max_model_len, dtype=args.dtype, max_lora_rank=args.max_lora_rank)
    except EngineError as exc:  # an adapter folder that does not load
        raise UsageError(exc.message) from None
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    # vLLM serves a model under MODEL as given (`vllm serve org/name`: model="org/name"); its folder's
    # name stays the first name here, as before
    names = args.served_model_name or list(dict.fromkeys([served] + ([folder] if folder is not None else [])))
    served = names[0]
    changed = {k: v for k, v in engine.sampling_defaults.items() if v != OPENAI_DEFAULTS[k]}
    if changed:  # as vLLM says it: requests that leave these out will not get OpenAI's defaults
        print(f"minilora serve: default sampling parameters from the model's generation_config.json: {changed}")
    print(f"minilora serve: {served} with adapters {engine.adapters()} on http://{args.host}:{args.port}/v1")
    make_server(engine, served, args.host, args.port, api_key=args.api_key, aliases=names[1:],
                trust_request_chat_template=args.trust_request_chat_template).run()
    return 0
