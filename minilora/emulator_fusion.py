"""``cupy.fuse`` for the emulator's arrays.

CuPy's ``fuse`` traces the decorated function on its CuPy arrays' dtypes and compiles one ElementwiseKernel (or
ReductionKernel, for a function ending in a reduction) out of its ufunc calls, so that a chain of operations makes
one pass over memory instead of one per operation.  The numbers are the unfused function's: each operation keeps
its dtype and its rounding inside the kernel.  When no argument is a CuPy array, CuPy calls the function as it is
(``cupy/_core/fusion.pyx``, ``Fusion.__call__``: "No cupy ndarray exists in the arguments"), and NumPy computes.

The emulator's device arrays are NumPy arrays, so that fallback is what runs here: the decorated function is called
on its arguments, elementwise operations and reductions alike, and gives exactly the unfused result -- NumPy's
values under NumPy 2's type rules (a Python scalar takes the array's dtype, a NumPy scalar its own), which CuPy 14
follows too.  A kernel generated here would not: g++'s ``expf`` and NumPy's vectorised ``exp`` differ in the last
bit, so a "fused" result would differ from the unfused one, which on a GPU it does not.

    @fuse(kernel_name="squared_diff")
    def squared_diff(x, y):
        return (x - y) * (x - y)
"""
from __future__ import annotations

import functools


class Fusion:
    """What ``fuse`` returns: calls the function (CuPy's path for host arrays), under the kernel's name."""

    def __init__(self, func, name: str | None = None):
        self.func = func
        self.name = name or func.__name__

    def __repr__(self) -> str:
        return f"<Fusion '{self.name}'>"

    def __call__(self, *args):  # positional only, as CuPy's Fusion.__call__(self, *args)
        return self.func(*args)


def fuse(*args, **kwargs):
    """``cupy.fuse``: ``@fuse``, ``@fuse()`` or ``@fuse(kernel_name="...")`` over a function of arrays and scalars."""
    def wrap(func, kernel_name=None):
        return functools.update_wrapper(Fusion(func, kernel_name), func)

    if len(args) == 1 and not kwargs and callable(args[0]):
        return wrap(args[0])
    return lambda func: wrap(func, *args, **kwargs)
