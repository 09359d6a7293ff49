"""``minilora.accelerator``: the ``torch.accelerator`` questions a script asks before it picks a device,
as the PyTorch quickstart does::

    device = minilora.accelerator.current_accelerator().type if minilora.accelerator.is_available() else "cpu"

minilora's one accelerator is ``cuda`` (CuPy). The ``emu`` device runs CUDA kernels in a CPU emulator:
it is not an accelerator, and ``current_accelerator()`` never names it.
"""
from . import cuda

__all__ = ["is_available", "current_accelerator", "device_count", "current_device_index", "synchronize"]


def is_available():
    """True when a GPU answers through CuPy."""
    return cuda.is_available()


def current_accelerator(check_available=False):
    """``device('cuda')`` when it can run, else None (minilora finds no accelerator it cannot use, so
    ``check_available`` changes nothing)."""
    if not cuda.is_available():
        return None
    from .device import device
    return device("cuda")


def device_count():
    return cuda.device_count()


def _require():
    if not cuda.is_available():
        raise RuntimeError("Cannot access accelerator device when none is available.")


def current_device_index():
    _require()
    return cuda.current_device()


def synchronize(device=None):
    _require()
    cuda.synchronize()
