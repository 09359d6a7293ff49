"""``minilora.cuda``: the few ``torch.cuda`` functions a training script asks before it picks a device.

    device = "cuda" if minilora.cuda.is_available() else "cpu"

Asking never fails and never imports CuPy at ``import minilora`` time: the ``cuda`` device probes
once, on first use (see ``minilora.device``).
"""
from .amp import cuda_amp as amp  # noqa: F401  (torch.cuda.amp's deprecated autocast / GradScaler)
from .device import OutOfMemoryError, all_devices  # noqa: F401  (torch.cuda.OutOfMemoryError is torch's class)

__all__ = ["is_available", "device_count", "current_device", "synchronize", "manual_seed", "manual_seed_all",
           "seed", "seed_all", "OutOfMemoryError"]


def _cuda():
    return next(d for d in all_devices() if d.name == "cuda")


def is_available():
    """True when CuPy imports and a GPU answers."""
    return _cuda().enabled()


def device_count():
    if not is_available():
        return 0
    import cupy
    return int(cupy.cuda.runtime.getDeviceCount())


def current_device():
    if not is_available():
        raise RuntimeError(f"no CUDA device: {_cuda().why_disabled}")
    return 0


def synchronize():
    """Wait for the GPU to finish queued work (nothing to wait for without one)."""
    if is_available():
        import cupy
        cupy.cuda.runtime.deviceSynchronize()


# ---- seeding: the lines every seed-everything helper (transformers' set_seed too) calls ----------------------------
def manual_seed(seed):
    """``torch.cuda.manual_seed``: torch seeds its CUDA (Philox) generator, which minilora does not have: its cuda
    tensors draw from the CPU generator, seeded by ``minilora.manual_seed``. So this seeds nothing; without a GPU
    torch ignores it too, and with one minilora says once that torch's cuda numbers are not reproduced."""
    int(seed)  # (torch's check: int(seed) must work)
    if is_available():
        from .random import note_cuda_draw
        note_cuda_draw("cuda")


def manual_seed_all(seed):
    """``torch.cuda.manual_seed_all``: as ``manual_seed`` (one generator stands for every device here)."""
    manual_seed(seed)


def seed():
    """``torch.cuda.seed``: a non-deterministic seed for the CUDA generator minilora does not have (see
    ``manual_seed``)."""
    manual_seed(0)


def seed_all():
    seed()
