"""``torch.distributed.algorithms.ddp_comm_hooks``: hooks for ``DistributedDataParallel.register_comm_hook``
(``default_hooks``, ``powerSGD_hook``, ``post_localSGD_hook``, ``quantization_hooks``, ``debugging_hooks``), and torch's
``DDPCommHookType`` / ``register_ddp_comm_hook`` that register one by name."""
import enum
from functools import partial

from . import debugging_hooks as debugging, default_hooks as default, powerSGD_hook as powerSGD  # noqa: F401
from . import post_localSGD_hook, quantization_hooks as quantization  # noqa: F401

__all__ = ["DDPCommHookType", "register_ddp_comm_hook"]

# a partial is an enum member by itself up to Python 3.12; 3.13 warns unless it is wrapped (3.11+ has enum.member)
_member = getattr(enum, "member", lambda value: value)


def _ddp_comm_hook_wrapper(comm_hook, model, state):
    model.register_comm_hook(state, comm_hook)


def _powerSGD_comm_hook_wrapper(comm_hook, model, state, matrix_approximation_rank, start_powerSGD_iter=1_000):
    """``state`` is the process group here; the PowerSGD state around it is made with torch's defaults."""
    powerSGD_state = powerSGD.PowerSGDState(process_group=state, matrix_approximation_rank=matrix_approximation_rank,
                                            start_powerSGD_iter=start_powerSGD_iter)
    model.register_comm_hook(powerSGD_state, comm_hook)


class DDPCommHookType(enum.Enum):
    """torch's names for the hooks: ``DDPCommHookType.FP16_COMPRESS.value(model=ddp, state=None)``."""
    ALLREDUCE = _member(partial(_ddp_comm_hook_wrapper, comm_hook=default.allreduce_hook))
    FP16_COMPRESS = _member(partial(_ddp_comm_hook_wrapper, comm_hook=default.fp16_compress_hook))
    BF16_COMPRESS = _member(partial(_ddp_comm_hook_wrapper, comm_hook=default.bf16_compress_hook))
    QUANTIZE_PER_TENSOR = _member(partial(_ddp_comm_hook_wrapper, comm_hook=quantization.quantization_pertensor_hook))
    QUANTIZE_PER_CHANNEL = _member(partial(_ddp_comm_hook_wrapper,
                                           comm_hook=quantization.quantization_perchannel_hook))
    POWER_SGD = _member(partial(_powerSGD_comm_hook_wrapper, comm_hook=powerSGD.powerSGD_hook,
                                    matrix_approximation_rank=1))
    POWER_SGD_RANK2 = _member(partial(_powerSGD_comm_hook_wrapper, comm_hook=powerSGD.powerSGD_hook,
                                          matrix_approximation_rank=2))
    BATCHED_POWER_SGD = _member(partial(_powerSGD_comm_hook_wrapper, comm_hook=powerSGD.batched_powerSGD_hook,
                                            matrix_approximation_rank=1))
    BATCHED_POWER_SGD_RANK2 = _member(partial(_powerSGD_comm_hook_wrapper,
                                                  comm_hook=powerSGD.batched_powerSGD_hook,
                                                  matrix_approximation_rank=2))
    NOOP = _member(partial(_ddp_comm_hook_wrapper, comm_hook=debugging.noop_hook))


def register_ddp_comm_hook(comm_hook_type, model, state=None):
    """Register the hook ``comm_hook_type`` names on the DDP ``model`` (``state``: its process group)."""
    comm_hook_type.value(model=model, state=state)
