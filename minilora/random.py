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
