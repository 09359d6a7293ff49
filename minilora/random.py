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
