"""``torch.futures.Future``: a value that is ready now or later.

    fut = minilora.futures.Future()
    fut.set_result(tensor)                   # a hook that does no communication returns a completed one
    dist.all_reduce(t, async_op=True).get_future().then(lambda f: f.value()[0])

A Future is either *set* by someone (``set_result`` / ``set_exception``: what a user builds) or
*computed* by waiting (what ``Work.get_future()`` gives: waiting finishes the MPI operation).
``then(callback)`` is a Future of ``callback(this_future)``; minilora runs the callback when the
result is first asked for (one process, no completion thread), torch when this Future completes --
the same value either way.
"""
import threading
import types

__all__ = ["Future", "collect_all", "wait_all"]

_UNSET = object()


class Future:
    """torch's Future: ``done``, ``wait``, ``value``, ``then``, ``add_done_callback``, ``set_result``,
    ``set_exception``. ``devices`` is accepted as torch's (minilora's Futures carry no CUDA streams)."""

    __class_getitem__ = classmethod(types.GenericAlias)  # Future[Tensor], as hooks annotate it

    def __init__(self, *, devices=None):
        self._compute, self._poll = None, None
        self._value, self._exception, self._set = _UNSET, None, threading.Event()
        self._callbacks = []

    @classmethod
    def _of(cls, compute, poll=lambda: True):
        """A Future whose value is ``compute()``, run once, by the first ``wait``; ``poll()`` says
        whether waiting would return at once."""
        future = cls()
        future._compute, future._poll = compute, poll
        return future

    def done(self):
        return self._set.is_set() or (self._compute is not None and self._poll())

    def set_result(self, result):
        self._settle(result, None)

    def set_exception(self, result):
        if not isinstance(result, BaseException):
            raise TypeError(f"set_exception: expected an exception, got {type(result).__name__}")
        self._settle(_UNSET, result)

    def _settle(self, value, exception):
        if self._set.is_set() or self._compute is not None:
            raise RuntimeError("Error setting result of a Future: this Future is already completed (or is "
                               "completed by the operation it came from, Work.get_future())")
        self._value, self._exception = value, exception
        self._set.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def wait(self):
        """The value, once it is there (raises the exception the Future holds)."""
        if self._compute is not None and not self._set.is_set():
            try:
                self._value = self._compute()
            except Exception as error:  # noqa: BLE001 - kept, and raised by every wait, as torch's
                self._exception = error
            self._set.set()
        self._set.wait()
        if self._exception is not None:
            raise self._exception
        return self._value

    def value(self):
        return self.wait()

    def then(self, callback):
        """A Future of ``callback(self)`` (an exception in it is that Future's exception)."""
        def chained():
            try:
                self.wait()
            except Exception:  # noqa: BLE001 - the callback sees it through value(), as torch's
                pass
            return callback(self)
        return type(self)._of(chained, self.done)

    def add_done_callback(self, callback):
        """``callback(self)`` once this Future is done (now, if it is)."""
        if self._set.is_set():
            callback(self)
        elif self._compute is not None:
            self.wait()
            callback(self)
        else:
            self._callbacks.append(callback)


def collect_all(futures):
    """A Future of the list of ``futures``, done when they all are."""
    futures = list(futures)

    def every_one():
        for future in futures:
            future.wait()
        return futures
    return Future._of(every_one, lambda: all(f.done() for f in futures))


def wait_all(futures):
    """Wait for every Future and return their values."""
    return [f.wait() for f in futures]
