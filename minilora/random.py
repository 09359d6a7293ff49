"""One seeded random-number generator for the whole library (init, dropout, sampling).

``minilora.manual_seed(seed)`` makes every later draw reproducible, like ``torch.manual_seed``.
"""
import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed):
    """Reset the global generator: the same seed gives the same inits, dropout masks and samples."""
    global _generator
    _generator = np.random.default_rng(int(seed))
    return _generator


def generator():
    """The global ``numpy.random.Generator``."""
    return _generator


def fresh_seed():
    """A 63-bit seed drawn from the global generator (for ops that take an explicit seed)."""
    return int(_generator.integers(0, 2**63 - 1))


def get_rng_state():
    """The global generator's state (``torch.get_rng_state``): hand it to ``set_rng_state`` to
    replay the same draws (gradient checkpointing replays a layer's dropout masks this way)."""
    return _generator.bit_generator.state


def set_rng_state(state):
    """Restore a state from ``get_rng_state``."""
    _generator.bit_generator.state = state


class Generator:
    """``torch.Generator()``: a generator of its own, for ``randn(..., generator=g)`` and
    ``multinomial(..., generator=g)``. Seeded the same way as torch's, but it draws NumPy's stream,
    so the numbers differ from torch's for the same seed (as every minilora random draw does)."""

    def __init__(self, device="cpu"):
        self.device = device
        self._seed = 67280421310721  # torch's default seed, so initial_seed() reads as torch's
        self._rng = np.random.default_rng(self._seed)

    def manual_seed(self, seed):
        self._seed = int(seed)
        self._rng = np.random.default_rng(self._seed)
        return self  # torch returns the generator: g = torch.Generator().manual_seed(42)

    def initial_seed(self):
        return self._seed

    def get_state(self):
        return self._rng.bit_generator.state

    def set_state(self, state):
        self._rng.bit_generator.state = state
        return self
