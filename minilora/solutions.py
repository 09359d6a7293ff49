"""Whether an exercise region is still the shipped solution, for the fast paths that compute its numbers
another way (gemm_pool's C threads for exercises 1.5, 4.2 and 4.3, the compiled row kernels and attention for 2.1,
2.2 and 2.4, AdamW's compiled pass for 6.1): they step
aside for a learner's region (a student copy, ``minilora exercises build``) and for a test's stub, so that what a
learner writes is what the model runs (tests/test_exercise_paths_r21.py). The regions themselves:
``minilora.exercises``."""
import functools
import inspect

__all__ = ["solution_check"]

_MARK = "# BEGIN" + " SOLUTION"  # (in two pieces: a student copy holds no such text, tests/test_exercises.py)


def solution_check(function):
    """Made where ``function`` is defined: a callable that answers whether its exercise region is still the
    shipped solution -- ``function`` runs the code it was imported with (tests/test_exercise_paths_r21.py swaps in
    a stub) from a source whose region is marked as the solution (``_MARK``; a student copy's is the learner's).
    A fast path that computes the solution's numbers another way (gemm_pool's C threads, AdamW's compiled pass)
    asks it first, so that what a learner writes is what the model runs."""
    imported = function.__code__

    @functools.lru_cache(maxsize=None)
    def marked():
        try:
            return _MARK in inspect.getsource(imported)
        except (OSError, TypeError):  # (no source at hand: a frozen build)
            return False
    return lambda: function.__code__ is imported and marked()
