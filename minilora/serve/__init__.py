"""Multi-adapter serving: one base model, many LoRA adapters, one batch.

* ``batch.RaggedBatch`` -- batched decoding over a left-padded KV cache: rows of different lengths
  (and different adapters, through ``ops.bgmv``) advance one token per forward pass;
* ``engine.Engine``     -- the continuous-batching scheduler: requests join between decode steps and
  leave when done; a bounded batch and a bounded queue; adapters loaded and unloaded between steps;
* ``app.create_app``    -- the OpenAI-compatible HTTP API on Starlette (``pip install minilora[serve]``);
* ``cli``               -- ``minilora serve --base DIR --adapter NAME=DIR ...`` (uvicorn).

Only ``batch`` and ``engine`` are imported here: they need nothing beyond NumPy.
"""
from .batch import RaggedBatch
from .engine import Engine, EngineError, Request

__all__ = ["RaggedBatch", "Engine", "EngineError", "Request"]
