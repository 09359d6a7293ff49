"""One seeded random-number generator for the whole library (init, dropout, sampling).

``minilora.manual_seed(seed)`` makes every later draw reproducible, like ``torch.manual_seed``. It seeds
``default_generator`` (and returns it, as torch does); the draws are NumPy's stream, so the numbers
differ from torch's for the same seed. Seeds are torch's: an integer in ``[-2**63, 2**64)``, a negative
one standing for ``2**64 + seed``.
"""
import contextlib

import numpy as np

_SEED_RANGE = 1 << 64


def _seed_value(seed):
    """``seed`` (an int) as torch stores it: negatives wrapped to 64 bits; outside ``[-2**63, 2**64)``
    the ValueError torch raises."""
    if not -(1 << 63) <= seed < _SEED_RANGE:
        raise ValueError(f"Overflow when unpacking long long (seed {seed} is outside [-2**63, 2**64))")
    return seed % _SEED_RANGE


class Generator:
    """``torch.Generator()``: a generator of its own, for ``randn(..., generator=g)`` and
    ``multinomial(..., generator=g)``. Seeded the same way as torch's, but it draws NumPy's stream,
    so the numbers differ from torch's for the same seed (as every minilora random draw does)."""

    def __init__(self, device="cpu"):
        self.device = device
        self.manual_seed(67280421310721)  # torch's default seed, so initial_seed() reads as torch's

    def manual_seed(self, seed):
        """A Python int only, as torch's ``Generator.manual_seed`` (``minilora.manual_seed`` takes
        anything ``int()`` takes)."""
        if isinstance(seed, np.integer):
            raise TypeError("an integer is required")
        if type(seed) is not int:
            kind = type(seed).__name__ if type(seed).__module__ == "builtins" else \
                f"{type(seed).__module__.split('.')[0]}.{type(seed).__name__}"
            raise RuntimeError(f"manual_seed expected a long, but got {kind}")
        self._seed = _seed_value(seed)
        self._rng = np.random.default_rng(self._seed)
        return self  # torch returns the generator: g = torch.Generator().manual_seed(42)

    def seed(self):
        """Seed from the operating system's entropy (non-deterministic); returns the 64-bit seed."""
        seed = int(np.random.SeedSequence().entropy) % _SEED_RANGE
        self.manual_seed(seed)
        return seed

    def initial_seed(self):
        return self._seed

    def get_state(self):
        return self._rng.bit_generator.state

    def set_state(self, state):
        self._rng.bit_generator.state = state
        return self


# The library's generator. Seeded 0 at import (torch's starts at 67280421310721): minilora's unseeded
# runs have always drawn this stream, and keep drawing it.
default_generator = Generator().manual_seed(0)


def manual_seed(seed):
    """Reset the global generator: the same seed gives the same inits, dropout masks and samples.
    Returns ``default_generator``, as torch."""
    return default_generator.manual_seed(int(seed))


def seed():
    """``torch.seed()``: seed the global generator non-deterministically; returns the seed."""
    return default_generator.seed()


def initial_seed():
    """The seed the global generator was last seeded with (``torch.initial_seed()``)."""
    return default_generator.initial_seed()


def generator():
    """The global ``numpy.random.Generator``."""
    return default_generator._rng


def fresh_seed():
    """A 63-bit seed drawn from the global generator (for ops that take an explicit seed)."""
    return int(generator().integers(0, 2**63 - 1))


def get_rng_state():
    """The global generator's state (``torch.get_rng_state``): hand it to ``set_rng_state`` to
    replay the same draws (gradient checkpointing replays a layer's dropout masks this way)."""
    return generator().bit_generator.state


def set_rng_state(state):
    """Restore a state from ``get_rng_state``."""
    generator().bit_generator.state = state


@contextlib.contextmanager
def fork_rng(devices=None, enabled=True, _caller="fork_rng", _devices_kw="devices", device_type=None):
    """``torch.random.fork_rng``: what the block draws (a ``manual_seed`` in it too) leaves the global
    generator as it was before the block. minilora has one generator for every device, so ``devices``
    and ``device_type`` change nothing."""
    if not enabled:
        yield
        return
    seed, state = default_generator.initial_seed(), get_rng_state()
    try:
        yield
    finally:
        default_generator.manual_seed(seed)
        set_rng_state(state)
