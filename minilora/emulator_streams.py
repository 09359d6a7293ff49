"""CuPy's streams and events (``cupy.cuda.Stream``, ``Event``, ``get_elapsed_time``) for the CPU emulator.

Code written for CuPy launches on streams and times kernels with events::

    from minilora.emulator import cuda            # in place of cupy.cuda
    stream = cuda.Stream(non_blocking=True)
    start, end = cuda.Event(), cuda.Event()
    with stream:
        start.record()
        kernel(grid, block, args)                  # or kernel(grid, block, args, stream=stream)
        end.record()
    end.synchronize()
    print(cuda.get_elapsed_time(start, end), "ms")

Every emulated launch has finished when the call returns, so each stream is always complete (``done`` is True,
``synchronize()`` returns at once) and work on different streams runs one launch after another in the order
it was issued -- an order a GPU may also take, so a program correct on streams is correct here (one that forgets
a wait or a synchronize is not caught).  An event records the host clock when recorded: ``get_elapsed_time``
measures the emulator's time, not a GPU's.  What CUDA refuses is refused with its error name: the elapsed time
of an event never recorded, or created with ``disable_timing=True`` (cudaErrorInvalidResourceHandle).
"""
from __future__ import annotations

import itertools
import threading
import time
import types

from .emulator import DriverError, EmulatorError
# what RawModule.get_global answers, so that ``isinstance(p, cupy.cuda.MemoryPointer)`` holds of it
from .emulator_memory import GlobalSymbol as MemoryPointer

# ``cupy.cuda.runtime``'s limits (deviceSetLimit / deviceGetLimit: the device heap's size) and deviceReset, and its
# CUDARuntimeError (a KernelFault is one: what a GPU reports after a kernel's fault)
from . import emulator_runtime as runtime  # noqa: E402
# ``cupy.cuda.driver.CUDADriverError``: a launch the driver refuses (a block of 2048 threads, too much shared memory),
# and a kernel's fault, which a GPU's next launch reports so
driver = types.SimpleNamespace(CUDADriverError=DriverError)

__all__ = ["Stream", "Event", "get_elapsed_time", "get_current_stream", "stream_of", "MemoryPointer", "runtime",
           "driver"]

_handles = itertools.count(1)  # stand-ins for the driver's handles (``ptr``): distinct and non-zero
_current = threading.local()  # as CUDA's: the current stream is per host thread


class Stream:
    """``cupy.cuda.Stream(null=False, non_blocking=False, ptr=0)``: a queue of launches (always already run)."""

    def __init__(self, null: bool = False, non_blocking: bool = False, ptr: int = 0):
        self.non_blocking = bool(non_blocking)
        self.ptr = 0 if null else (int(ptr) or next(_handles))
        self._outer: list[Stream] = []

    @property
    def done(self) -> bool:
        return True  # every launch on it has finished

    def synchronize(self) -> None:
        """Wait for the stream's work: there is none left, a launch finishes before it returns."""

    def record(self, event: "Event | None" = None) -> "Event":
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event: "Event") -> None:
        """Make later work on this stream wait for ``event``: it has already happened."""
        _check_event(event, "wait_event")

    def launch_host_func(self, callback, arg) -> None:
        """Run ``callback(arg)`` after the stream's work, which is already done: now."""
        callback(arg)

    def add_callback(self, callback, arg) -> None:
        """CuPy's older callback form: ``callback(stream, status, arg)``, status 0 (cudaSuccess)."""
        callback(self, 0, arg)

    def use(self) -> "Stream":
        _current.stream = self
        return self

    def __enter__(self) -> "Stream":
        self._outer.append(get_current_stream())
        return self.use()

    def __exit__(self, *exc) -> None:
        self._outer.pop().use()

    def __repr__(self) -> str:
        return f"<minilora.emulator.Stream {self.ptr:#x}>" if self.ptr else "<minilora.emulator.Stream null>"


Stream.null = Stream(null=True)  # CuPy's cupy.cuda.Stream.null: the legacy default stream


def get_current_stream() -> Stream:
    """The stream launches go to when none is given (``with stream:`` or ``stream.use()`` sets it)."""
    return getattr(_current, "stream", Stream.null)


class Event:
    """``cupy.cuda.Event(block=False, disable_timing=False, interprocess=False)``: a point in a stream."""

    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False):
        if interprocess and not disable_timing:
            raise EmulatorError("cudaErrorInvalidValue: invalid argument (an interprocess event must be created "
                                "with disable_timing=True, as CUDA requires)")
        self.block, self.disable_timing, self.interprocess = bool(block), bool(disable_timing), bool(interprocess)
        self.ptr = next(_handles)
        self._recorded_at: float | None = None

    def record(self, stream: Stream | None = None) -> None:
        """Mark this point of ``stream`` (default: the current stream): all work issued before it is done."""
        stream_of(stream, "Event.record")
        self._recorded_at = time.perf_counter()

    def synchronize(self) -> None:
        """Wait until the work before the event is done: it is."""

    @property
    def done(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<minilora.emulator.Event {self.ptr:#x}>"


def _check_event(event, what: str) -> None:
    if not isinstance(event, Event):
        raise TypeError(f"{what} takes a minilora.emulator.Event, got {type(event).__name__}")


def get_elapsed_time(start_event: Event, end_event: Event) -> float:
    """Milliseconds of host time between two recorded events, as ``cupy.cuda.get_elapsed_time``."""
    for event in (start_event, end_event):
        _check_event(event, "get_elapsed_time")
        if event.disable_timing:
            raise EmulatorError("cudaErrorInvalidResourceHandle: invalid resource handle (an event created with "
                                "disable_timing=True has no time to compare)")
        if event._recorded_at is None:
            raise EmulatorError("cudaErrorInvalidResourceHandle: invalid resource handle (an event that was never "
                                "recorded has no time: call event.record() first)")
    return (end_event._recorded_at - start_event._recorded_at) * 1e3


def stream_of(stream, what: str) -> Stream:
    """The stream a launch or record goes to: ``stream``, or the current one for None; anything else is refused."""
    if stream is None:
        return get_current_stream()
    if not isinstance(stream, Stream):
        raise TypeError(f"{what}: stream must be a minilora.emulator.Stream (minilora.emulator.cuda.Stream(), as "
                        f"cupy.cuda.Stream()) or None, got {type(stream).__name__}")
    return stream
