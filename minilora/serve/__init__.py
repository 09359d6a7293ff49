"""Multi-adapter serving: one base model, many LoRA adapters, one batch.

* ``batch.RaggedBatch`` -- batched decoding over a left-padded KV cache: rows of different lengths
  (and different adapters, through ``ops.bgmv``) advance one token per forward pass;
* ``engine.Engine``     -- the continuous-batching scheduler: requests join between decode steps and
  leave when done; a bounded batch and a bounded queue; adapters loaded and unloaded between steps;
* ``app.create_app``    -- the OpenAI-compatible HTTP API on Starlette (``pip install minilora[serve]``);
* ``cli``               -- ``minilora serve --base DIR --adapter NAME=DIR ...`` (uvicorn).

``batch`` and ``engine`` need nothing beyond NumPy; their names here load on first use (PEP 562), so that
``minilora serve --help`` (``cli``) does not import the model, LoRA and tokenizer code they pull in.
"""
__all__ = ["RaggedBatch", "Engine", "EngineError", "Request"]
_HOMES = {"RaggedBatch": "batch", "Engine": "engine", "EngineError": "engine", "Request": "engine"}


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    value = globals()[name] = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
