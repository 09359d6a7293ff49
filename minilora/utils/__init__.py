"""The names of ``torch.utils`` that minilora has: ``minilora.utils.data`` (datasets, samplers,
``DataLoader``), ``minilora.utils.hooks`` (``RemovableHandle``) and ``minilora.utils.checkpoint`` (gradient
checkpointing, which belongs to the nn layer above: loaded on first use, as ``minilora.utils.checkpoint`` or ``import minilora.utils.checkpoint``)."""
from . import data, dlpack, hooks

__all__ = ["checkpoint", "data", "dlpack", "hooks"]


def __getattr__(name):
    if name == "checkpoint":  # (nn's gradient checkpointing under torch's name: a layer above, so on first use)
        import minilora.utils.checkpoint  # noqa: F401  (the import system sets it as this package's attribute)
        return globals()["checkpoint"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
