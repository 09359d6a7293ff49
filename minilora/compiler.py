"""``torch.compile``, ``torch.compiler``, ``torch.jit`` and ``torch._dynamo`` as scripts call them.

minilora has no compiler: its ops run eagerly, one NumPy/CuPy call each, which is the point of a
teaching framework (every step can be stepped through). So ``compile`` checks its arguments as torch
does and hands back something that computes exactly what it was given: a module comes back wrapped
in ``OptimizedModule`` (``minilora/nn/compiled.py``: the ``_orig_mod.`` prefix scripts expect in
``state_dict`` keys), a function comes back as a wrapper that calls it. ``jit.script``/``jit.trace``
return their argument itself (torch returns a ScriptFunction/ScriptModule that computes the same).
"""
import functools
import sys
import types

__all__ = ["compile", "is_compiling", "is_dynamo_compiling", "reset", "disable", "jit", "dynamo"]

_MODES = ("default", "lite", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
_BACKENDS = ("cudagraphs", "inductor", "openxla", "tvm", "eager", "aot_eager")  # (the last two: torch's debug ones)


def compile(model=None, *, fullgraph=False, dynamic=None, backend="inductor", mode=None, options=None,
            name=None, disable=False, recompile_limit=None, isolate_recompiles=False, shapes_spec=None):
    """``torch.compile``: torch's argument checks, then no compiling (module docstring).
    ``compile(mode=...)`` without a model is a decorator, as torch's."""
    if mode is not None and options is not None:
        raise RuntimeError("Either mode or options can be specified, but both can't be specified at the same time.")
    if mode is not None and mode not in _MODES:
        raise RuntimeError(f"Unrecognized mode={mode}, should be one of: {', '.join(_MODES)}")
    if isinstance(backend, str) and backend not in _BACKENDS:
        raise RuntimeError(f"Invalid backend: {backend!r}, see `torch._dynamo.list_backends()` for available "
                           "backends.")
    if model is None:
        return functools.partial(compile, fullgraph=fullgraph, dynamic=dynamic, backend=backend, mode=mode,
                                 options=options, disable=disable)
    if not callable(model):
        raise AssertionError(f"A callable function is expected, but {type(model)} is provided.")
    from .nn.compiled import OptimizedModule  # (a layer up: only a module gets the wrapper)
    from .nn.module import Module
    if isinstance(model, Module):
        return OptimizedModule(model, _inductor=backend == "inductor" and not disable)

    @functools.wraps(model)
    def compiled(*args, **kwargs):
        return model(*args, **kwargs)
    return compiled


def is_compiling():
    return False  # (nothing is ever being traced: code that branches on it takes its eager path)


is_dynamo_compiling = is_compiling


def reset():
    """``torch.compiler.reset()``: clears compiled code; there is none."""


def disable(fn=None, recursive=True, *, reason=None):
    """``@torch.compiler.disable``: everything already runs uncompiled, so the function itself."""
    return (lambda f: f) if fn is None else fn


def _list_backends(exclude_tags=("debug", "experimental")):
    return [b for b in _BACKENDS if b not in ("eager", "aot_eager")]


def _unchanged(obj=None, *args, **kwargs):
    return obj


def _decorator(fn=None, **kwargs):
    return (lambda f: f) if fn is None else fn


jit = types.ModuleType("minilora.jit", "torch.jit: script/trace return their argument unchanged (no TorchScript).")
jit.script = _unchanged
jit.trace = _unchanged
jit.trace_module = _unchanged
jit.freeze = _unchanged
jit.optimize_for_inference = _unchanged
jit.ignore = _decorator
jit.unused = _decorator
jit.export = _decorator
jit.is_scripting = is_compiling
jit.is_tracing = is_compiling

dynamo = types.ModuleType("minilora._dynamo", "torch._dynamo: the few names scripts touch.")
dynamo.reset = reset
dynamo.is_compiling = is_compiling
dynamo.disable = disable
dynamo.list_backends = _list_backends
dynamo.config = types.SimpleNamespace(suppress_errors=False, cache_size_limit=8, recompile_limit=8,
                                      capture_scalar_outputs=False, optimize_ddp=True)
# torch._dynamo.exc: the errors its tracer raises, which torch.cond / while_loop raise in eager code too
from .control_flow import TorchRuntimeError, UncapturedHigherOrderOpError  # noqa: E402
dynamo.exc = types.ModuleType("minilora._dynamo.exc", "torch._dynamo.exc: the tracer's errors cond/while_loop raise.")
dynamo.exc.UncapturedHigherOrderOpError, dynamo.exc.TorchRuntimeError = UncapturedHigherOrderOpError, TorchRuntimeError
for _module in (jit, dynamo, dynamo.exc):
    sys.modules[_module.__name__] = _module  # (``import minilora.jit``, ``import minilora._dynamo`` as torch's)
