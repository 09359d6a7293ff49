"""minilora: LoRA from the autograd engine down to the CUDA kernels.

    import minilora as ml
    x = ml.tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()
    x.grad  # [[2., 4.]]
"""
import numpy as _np

from . import ops
from . import random as _random
from .device import Device, all_devices, device
from .parallel import num_threads, set_num_threads
from .profiler import profile
from .random import get_rng_state, manual_seed, set_rng_state
from .tensor import (Tensor, enable_grad, is_grad_enabled, no_grad, set_grad_enabled, tensor)

__version__ = "0.1.0"


def _factory(fill):
    """``zeros(2, 3)`` / ``zeros((2, 3))`` style constructors, as in PyTorch."""
    def make(*shape, dtype="float32", device=None, requires_grad=False):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Tensor(fill(shape, dtype), device=device, requires_grad=requires_grad)
    return make


zeros = _factory(lambda shape, dtype: _np.zeros(shape, dtype=dtype))
ones = _factory(lambda shape, dtype: _np.ones(shape, dtype=dtype))
randn = _factory(lambda shape, dtype: _random.generator().standard_normal(shape).astype(dtype))
rand = _factory(lambda shape, dtype: _random.generator().random(shape).astype(dtype))


def arange(*args, dtype="int64", device=None):
    return Tensor(_np.arange(*args, dtype=dtype), device=device)


def from_numpy(array, device=None):
    return Tensor(array, device=device)


# The op wrappers at top level too, as torch.exp / torch.cat users expect.
from .ops import (abs, add, argmax, cat, clone, div, exp, log, log_softmax, logsumexp, matmul,  # noqa: E402,F401
                  max, mean, mul, neg, pow, relu, reshape, rsqrt, sigmoid, softmax, split, sqrt,
                  stack, sub, sum, tanh, transpose, var, where)

# Sub-packages load on first use (``ml.nn``, ``ml.optim``, ``ml.lora`` ...), as ``torch.nn`` users
# expect, without making ``import minilora`` pay for all of them.
_SUBMODULES = {"nn", "optim", "lora", "models", "memory", "data", "train", "generate", "tokenizer",
               "emulator", "kernels", "checkpoint", "testing", "exercises"}


def __getattr__(name):
    if name in _SUBMODULES:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'minilora' has no attribute '{name}'")
