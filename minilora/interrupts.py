"""Ctrl-C held back while minilora runs, step by step in Python, what torch runs in one call into C++.

torch's backward pass is one call into its C++ engine, and its fused optimizer step (the Trainer's default,
``adamw_torch_fused``) one kernel: Python's SIGINT handler runs only once control comes back, so a Ctrl-C there
raises KeyboardInterrupt after every gradient was accumulated (every parameter moved). minilora's run node by node
and slice by slice (on worker threads): a KeyboardInterrupt half-way left some leaves' ``.grad`` summed and others
not, or every step count bumped with half the parameters moved, and the next ``step()`` went on from there.
``held_ctrl_c()`` records a SIGINT that arrives inside it and hands it to the handler it stood in for as the
block ends, so what an interrupted program finds is what torch leaves: the whole update, or none of it.

Only SIGINT and only Python's main thread (where signal handlers run); a handler that is not a Python callable
(``SIG_IGN``, ``SIG_DFL``) is left in place, and a block inside another does nothing.
"""
import _signal  # (signal's C functions: signal.signal/getsignal wrap each answer in an enum, ~20k instructions a call)
import signal
import threading

__all__ = ["held_ctrl_c"]

_SIGINT = int(signal.SIGINT)


class held_ctrl_c:
    """``with held_ctrl_c(): ...``: a Ctrl-C inside the block is delivered when it ends (each one, in order)."""
    __slots__ = ("_previous", "_received")

    def __enter__(self):
        self._previous = None
        if threading.get_ident() != threading.main_thread().ident:  # (get_ident: C, no lookup in _active)
            return self
        previous = _signal.getsignal(_SIGINT)
        if not callable(previous) or isinstance(getattr(previous, "__self__", None), held_ctrl_c):
            return self  # (not Python's to deliver, or an outer block holds it already)
        self._received = []
        _signal.signal(_SIGINT, self._hold)  # (a system call each way, a few microseconds a block)
        self._previous = previous
        return self

    def _hold(self, signum, frame):
        self._received.append((signum, frame))

    def __exit__(self, *exc_info):
        previous, self._previous = self._previous, None
        if previous is None:
            return False
        _signal.signal(_SIGINT, previous)
        received, self._received = self._received, []
        for signum, frame in received:  # (raising KeyboardInterrupt now, once the update is whole)
            previous(signum, frame)
        return False
