"""torch's ``debugging_hooks.noop_hook``: no communication at all, to measure what the all-reduce costs."""
from ....futures import Future

__all__ = ["noop_hook"]


def noop_hook(_, bucket):
    """A Future of the bucket's own buffer: each rank keeps its local gradients (headroom analysis only)."""
    future = Future()
    future.set_result(bucket.buffer())
    return future
