"""A ``DataLoader``'s worker processes (``num_workers > 0``), run in this process as torch runs them.

What a worker changes is seen in what the batches hold: torch's worker ``w`` of an iterator whose base
seed is ``b`` (one word the iterator draws from the loader's generator, or the global one) seeds its
own torch generator and Python's ``random`` with ``b + w`` and NumPy's global generator with
``_generate_state(b, w)``, runs ``worker_init_fn(w)``, and then fetches and collates the batches sent to
it; ``get_worker_info()`` answers in it, and it holds its own copy of the dataset (and of the collate
function). The main process hands the batches out round robin (batch ``k`` to worker ``k % W``) and
yields them in that order; an ``IterableDataset`` is iterated whole by every worker (each worker's copy,
so a dataset that does not split its stream by ``get_worker_info()`` yields every sample ``W`` times,
as in torch), the workers' batches taken in turn until each stream ends.

So a dataset that draws in ``__getitem__`` (a random crop, a noise level) gets torch's numbers for the
same seed, and the main process's generators see only the base seed drawn, as in torch. Here a worker
is a saved set of generator states swapped in around each of its fetches (``Worker.running``), not a
process. Its dataset copy is shallow (``copy.copy``): attributes it sets (the docs' ``worker_init_fn``
that gives each worker a shard) stay its own, objects inside the dataset are shared.
"""
import contextlib
import copy
import dataclasses
import random as python_random
import traceback

import numpy as np

from .. import random

__all__ = ["WorkerInfo", "current", "start"]


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """torch's ``WorkerInfo``: what ``get_worker_info()`` returns inside a worker."""
    id: int
    num_workers: int
    seed: int
    dataset: object
    rng: object = None
    worker_method: str = "multiprocessing"


_current = None  # the WorkerInfo of the worker running now; None in the main process


def current():
    return _current


def _generate_state(base_seed, worker_id):
    """NumPy's seed for worker ``worker_id``: torch's port of NumPy's SeedSequence hash of
    ``[worker_id, base_seed's low and high 32 bits, 0]`` into four 32-bit words."""
    mask = 0xFFFFFFFF
    entropy = [worker_id, base_seed & mask, base_seed >> 32, 0]
    multiplier = [0x43B0D7E5]

    def hashed(value):
        value = (value ^ multiplier[0]) & mask
        multiplier[0] = (multiplier[0] * 0x931E8875) & mask
        value = (value * multiplier[0]) & mask
        return (value ^ (value >> 16)) & mask

    def mix(x, y):
        result = ((0xCA01F9DD * x) - (0x4973F715 * y)) & mask
        return (result ^ (result >> 16)) & mask

    pool = [hashed(word) for word in entropy]
    for source in range(4):
        for destination in range(4):
            if source != destination:
                pool[destination] = mix(pool[destination], hashed(pool[source]))
    state, multiplier_b = [], 0x8B51F9DD
    for value in pool:
        value = (value ^ multiplier_b) & mask
        multiplier_b = (multiplier_b * 0x58F38DED) & mask
        value = (value * multiplier_b) & mask
        state.append((value ^ (value >> 16)) & mask)
    return state


def _states():
    """The process's generators as a worker changes them: minilora's global one, Python's, NumPy's."""
    return random.default_generator.get_state(), python_random.getstate(), np.random.get_state()


def _set_states(states):
    torch_state, python_state, numpy_state = states
    random.default_generator.set_state(torch_state)
    python_random.setstate(python_state)
    np.random.set_state(numpy_state)


class Worker:
    """One of torch's worker processes: its generators' states between its fetches, its WorkerInfo (with
    its dataset copy), its collate function, and (for an IterableDataset) its stream of batches."""

    def __init__(self, worker_id, num_workers, base_seed, dataset, collate_fn, init_fn):
        seed = base_seed + worker_id
        self.info = WorkerInfo(worker_id, num_workers, seed, copy.copy(dataset))
        self.collate_fn, self.batches = copy.copy(collate_fn), None
        main = _states()
        try:
            python_random.seed(seed)
            random.default_generator.manual_seed(seed)
            np.random.seed(_generate_state(base_seed, worker_id))
            self._states = _states()
        finally:
            _set_states(main)
        if init_fn is not None:
            with self.running():
                init_fn(worker_id)

    @contextlib.contextmanager
    def running(self):
        """Run the block as this worker: its generators and its ``get_worker_info()``; the main
        process's are back afterwards, as a separate process would have left them."""
        global _current
        main, main_info = _states(), _current
        _set_states(self._states)
        _current = self.info
        try:
            yield self
        except Exception as error:  # torch's main process re-raises a worker's error with its traceback
            raise _as_reraised(error, self.info.id) from None
        finally:
            self._states = _states()
            _set_states(main)
            _current = main_info


class _KeyErrorMessage(str):
    """A KeyError's message shown as written, not as its repr (torch's ``KeyErrorMessage``)."""

    def __repr__(self):
        return self


def _as_reraised(error, worker_id):
    """What torch's ``ExceptionWrapper.reraise`` raises in the main process: the same type, its message
    ``Caught <type> in DataLoader worker process <id>.`` and the worker's traceback (a RuntimeError if
    the type cannot be built from one message)."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    message = f"Caught {type(error).__name__} in DataLoader worker process {worker_id}.\nOriginal {text}"
    if isinstance(error, KeyError):
        message = _KeyErrorMessage(message)
    try:
        return type(error)(message)
    except Exception:
        return RuntimeError(message)


def start(loader, base_seed):
    """The loader's ``num_workers`` workers for an iterator with this base seed, each initialised."""
    return [Worker(w, loader.num_workers, base_seed, loader.dataset, loader.collate_fn, loader.worker_init_fn)
            for w in range(loader.num_workers)]
