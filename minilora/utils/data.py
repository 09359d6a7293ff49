"""``torch.utils.data`` under its own names: ``Dataset``, ``TensorDataset``, ``Subset``, ``ConcatDataset``,
``IterableDataset``, ``random_split``, the samplers and ``DataLoader`` with ``default_collate``.

The quickstart's loop runs as written::

    from minilora.utils.data import Dataset, DataLoader
    train_dataloader = DataLoader(training_data, batch_size=64, shuffle=True, drop_last=True)
    for X, y in train_dataloader: ...

Batches are made as torch makes them (``default_collate``): tensors are stacked, Python ints become
an int64 tensor, Python floats a *float64* tensor, NumPy arrays and scalars keep their dtype, strings
stay a list, dicts, tuples and named tuples are collated field by field (a tuple sample gives a
*list* of fields, as torch). Shuffling, sampling and ``random_split`` draw torch's numbers in torch's
order (``minilora.manual_seed`` or ``generator=``): the same seed gives torch's batches, and each
``iter(loader)`` takes the words torch's iterator takes from the global generator (its workers' base
seed; a shuffling sampler without a generator seeds one of its own per epoch), so the code after a
loop sees torch's stream. ``DistributedSampler`` seeds its own generator from ``seed + epoch``, as torch.

Everything runs in this process. With ``num_workers > 0`` each batch is fetched and collated as
torch's worker ``k % num_workers`` would (``data_workers.py``: its seeded generators, its copy of the
dataset, ``worker_init_fn``, ``get_worker_info()``), so random augmentations in ``__getitem__`` draw
torch's numbers and an ``IterableDataset`` is read once per worker, as in torch. ``minilora.data.DataLoader``
is a different thing: the fine-tuning loader of token ids.
"""
import bisect
import collections.abc
import itertools
import math
import sys
import types
import warnings
from typing import Generic, TypeVar

import numpy as np

from .. import accelerator, factories, random
from .. import distributed as _distributed
from . import data_workers
from ..ops import stack
from ..tensor import Tensor, tensor

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "Subset", "ConcatDataset", "ChainDataset", "StackDataset",
           "random_split", "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler",
           "WeightedRandomSampler",
           "DistributedSampler", "BatchSampler", "DataLoader", "default_collate", "default_convert",
           "get_worker_info"]


_T = TypeVar("_T")  # what a dataset or sampler yields: Dataset[tuple], Sampler[int], as torch's


# ---- datasets ---------------------------------------------------------------------------------------
class Dataset(Generic[_T]):
    """A map-style dataset: subclass it and define ``__getitem__`` (and ``__len__`` for a DataLoader
    that shuffles or counts batches). ``a + b`` is ``ConcatDataset([a, b])``, as torch."""

    def __getitem__(self, index):
        raise NotImplementedError("Subclasses of Dataset should implement __getitem__.")

    def __add__(self, other):
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A dataset that is a stream: subclass it and define ``__iter__``."""

    def __iter__(self):
        raise NotImplementedError("Subclasses of IterableDataset should implement __iter__.")

    def __add__(self, other):
        return ChainDataset([self, other])


def _is_stream(dataset):
    """Is ``dataset`` iterable-style, a stream the loader reads in order? minilora's IterableDataset, or torch's
    (``datasets.IterableDataset`` derives from it where torch is installed, and torch's DataLoader reads it as a
    stream: without a sampler, and without ``len``). Checked by the class's name and module: minilora does not
    import torch."""
    return isinstance(dataset, IterableDataset) or any(
        cls.__name__ == "IterableDataset" and cls.__module__.startswith("torch.utils.data")
        for cls in type(dataset).__mro__)


class ChainDataset(IterableDataset):
    """Several IterableDatasets one after the other (``a + b`` of two of them)."""

    def __init__(self, datasets):
        self.datasets = datasets

    def _streams(self):
        for d in self.datasets:
            if not isinstance(d, IterableDataset):
                raise AssertionError("ChainDataset only supports IterableDataset")
            yield d

    def __iter__(self):
        for d in self._streams():
            yield from d

    def __len__(self):
        return sum(len(d) for d in self._streams())


class TensorDataset(Dataset):
    """Sample ``i`` is ``(t[i] for t in tensors)``: the tensors must agree in their first dimension."""

    def __init__(self, *tensors):
        if not all(tensors[0].size(0) == t.size(0) for t in tensors):
            raise AssertionError("Size mismatch between tensors")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].size(0)


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, indices

    def __getitem__(self, idx):
        if isinstance(idx, list):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def __getitems__(self, indices):
        return [self.dataset[self.indices[i]] for i in indices]

    def __len__(self):
        return len(self.indices)


class ConcatDataset(Dataset):
    """Several map-style datasets one after the other."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise AssertionError("datasets should not be an empty iterable")
        for d in self.datasets:
            if isinstance(d, IterableDataset):
                raise AssertionError("ConcatDataset does not support IterableDataset")
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx):
        if idx < 0:
            if -idx > len(self):
                raise ValueError("absolute value of index should not exceed dataset length")
            idx = len(self) + idx
        which = bisect.bisect_right(self.cumulative_sizes, idx)
        start = self.cumulative_sizes[which - 1] if which else 0
        return self.datasets[which][idx - start]


class StackDataset(Dataset):
    """Several datasets of one length indexed together: sample ``i`` is the tuple of theirs (given as
    arguments) or the dict of theirs (given as keywords)."""

    def __init__(self, *args, **kwargs):
        if args and kwargs:
            raise ValueError("Supported either ``tuple``- (via ``args``) or``dict``- (via ``kwargs``) like "
                             "input/output, but both types are given.")
        if not args and not kwargs:
            raise ValueError("At least one dataset should be passed")
        datasets = list(args or kwargs.values())
        self._length = len(datasets[0])
        if any(self._length != len(dataset) for dataset in datasets):
            raise ValueError("Size mismatch between datasets")
        self.datasets = args or kwargs

    def __getitem__(self, index):
        if isinstance(self.datasets, dict):
            return {key: dataset[index] for key, dataset in self.datasets.items()}
        return tuple(dataset[index] for dataset in self.datasets)

    def __getitems__(self, indices):
        named = self.datasets if isinstance(self.datasets, dict) else dict(enumerate(self.datasets))
        columns = {}
        for key, dataset in named.items():
            getitems = getattr(dataset, "__getitems__", None)
            items = getitems(indices) if callable(getitems) else [dataset[i] for i in indices]
            if len(items) != len(indices):
                raise ValueError(f"Nested dataset's output size mismatch. Expected {len(indices)}, got {len(items)}")
            columns[key] = items
        rows = [{key: items[row] for key, items in columns.items()} for row in range(len(indices))]
        return rows if isinstance(self.datasets, dict) else [tuple(row.values()) for row in rows]

    def __len__(self):
        return self._length


def _split_lengths(n, lengths):
    """torch's rule: fractions that sum to 1 become counts (floor, then the remainder one by one from
    the first split on); counts must sum to ``n``."""
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        counts = []
        for i, fraction in enumerate(lengths):
            if fraction < 0 or fraction > 1:
                raise ValueError(f"Fraction at index {i} is not between 0 and 1")
            counts.append(math.floor(n * fraction))
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        for i, count in enumerate(counts):
            if count == 0:
                warnings.warn(f"Length of split at index {i} is 0. This might result in an empty dataset.",
                              stacklevel=3)
        lengths = counts
    if sum(lengths) != n:
        raise ValueError("Sum of input lengths does not equal the length of the input dataset!")
    return lengths


def random_split(dataset, lengths, generator=None):
    """Disjoint random ``Subset``s of the given lengths (or fractions summing to 1)."""
    lengths = _split_lengths(len(dataset), lengths)
    indices = factories.randperm(sum(lengths), generator=generator).tolist()
    return [Subset(dataset, indices[end - length:end])
            for end, length in zip(itertools.accumulate(lengths), lengths)]


# ---- samplers ---------------------------------------------------------------------------------------
class Sampler(Generic[_T]):
    """Yields dataset indices (or, for a batch sampler, lists of them)."""

    def __init__(self, data_source=None):
        pass

    def __iter__(self):
        raise NotImplementedError


class SequentialSampler(Sampler):
    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


_DRAWS_PER_CHUNK = 32  # (RandomSampler(replacement=True)'s randint calls, as torch's)


class RandomSampler(Sampler):
    """A fresh permutation each epoch (``replacement=True``: ``num_samples`` independent draws)."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        self.data_source, self.replacement, self.generator = data_source, replacement, generator
        self._num_samples = num_samples
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got replacement={replacement}")
        if not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError(f"num_samples should be a positive integer value, but got "
                             f"num_samples={self.num_samples}")

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        n = len(self.data_source)
        # as torch: without a generator, each epoch seeds a fresh one from the global generator (so
        # an epoch takes two words of the global stream, whatever its length)
        generator = self.generator if self.generator is not None else random.Generator().manual_seed(_drawn_seed())
        if self.replacement:  # (torch draws 32 at a time, lazily: minGPT's num_samples=int(1e10) never ends)
            for _ in range(self.num_samples // _DRAWS_PER_CHUNK):
                yield from factories.randint(0, n, (_DRAWS_PER_CHUNK,), generator=generator).tolist()
            yield from factories.randint(0, n, (self.num_samples % _DRAWS_PER_CHUNK,), generator=generator).tolist()
            return
        for _ in range(self.num_samples // n):
            yield from factories.randperm(n, generator=generator).tolist()
        yield from factories.randperm(n, generator=generator).tolist()[:self.num_samples % n]

    def __len__(self):
        return self.num_samples


def _drawn_seed(generator=None):
    """torch's ``torch.empty((), dtype=torch.int64).random_(generator=generator).item()``: a seed drawn
    from ``generator`` (or the global one), as torch's samplers and DataLoader iterators draw theirs."""
    return int(random.resolve(generator).random_((), np.int64))


class SubsetRandomSampler(Sampler):
    """``indices`` in a fresh random order each epoch."""

    def __init__(self, indices, generator=None):
        self.indices, self.generator = indices, generator

    def __iter__(self):
        for i in factories.randperm(len(self.indices), generator=self.generator).tolist():
            yield self.indices[i]

    def __len__(self):
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """``num_samples`` indices drawn with probability proportional to ``weights`` (with replacement
    unless ``replacement=False``): the usual cure for an unbalanced dataset."""

    def __init__(self, weights, num_samples, replacement=True, generator=None):
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
            raise ValueError(f"num_samples should be a positive integer value, but got num_samples={num_samples}")
        if not isinstance(replacement, bool):
            raise ValueError(f"replacement should be a boolean value, but got replacement={replacement}")
        weights = factories.as_tensor(weights, dtype=np.dtype("float64"))
        if weights.ndim != 1:
            raise ValueError(f"weights should be a 1d sequence but given weights have shape {tuple(weights.shape)}")
        self.weights, self.num_samples, self.replacement, self.generator = weights, num_samples, replacement, generator

    def __iter__(self):
        yield from factories.multinomial(self.weights, self.num_samples, self.replacement,
                                         generator=self.generator).tolist()

    def __len__(self):
        return self.num_samples


class DistributedSampler(Sampler):
    """Rank ``rank`` of ``num_replicas`` (by default: this process in ``minilora.distributed``'s group)
    takes every ``num_replicas``-th index of the epoch's order, from ``rank`` on; the order is padded by
    repeating its start (or, with ``drop_last``, cut) so every rank gets ``num_samples``. With
    ``shuffle`` the order is a permutation seeded by ``seed + epoch`` -- torch's own permutation, so
    the indices equal torch's -- : call ``set_epoch(epoch)`` at each epoch, or every epoch repeats the
    first one's order (as in torch)."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        num_replicas = _distributed.get_world_size() if num_replicas is None else num_replicas
        rank = _distributed.get_rank() if rank is None else rank
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0
        if drop_last and len(dataset) % num_replicas:
            self.num_samples = math.ceil((len(dataset) - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(len(dataset) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            indices = _torch_randperm(n, self.seed + self.epoch)
        else:
            indices = list(range(n))
        if self.drop_last:
            indices = indices[:self.total_size]
        else:
            padding = self.total_size - n
            indices += (indices * math.ceil(padding / n))[:padding] if padding > n else indices[:padding]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        self.epoch = epoch


def _torch_randperm(n, seed):
    """``torch.randperm(n, generator=torch.Generator().manual_seed(seed))``, exactly (minilora's
    Generator is torch's): DistributedSampler's order must be torch's, so ranks (or a resumed run)
    that mix torch and minilora read the same samples."""
    return factories.randperm(n, generator=random.Generator().manual_seed(seed)).tolist()


class BatchSampler(Sampler):
    """Groups ``sampler``'s indices into lists of ``batch_size`` (the short last one kept unless
    ``drop_last``)."""

    def __init__(self, sampler, batch_size, drop_last):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


# ---- collation --------------------------------------------------------------------------------------
def _is_namedtuple(value):
    return isinstance(value, tuple) and hasattr(value, "_fields")


def default_collate(batch):
    """A list of samples -> one batch, by torch's rules (see the module's docstring)."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return stack(batch, 0)
    if isinstance(elem, np.ndarray):
        if elem.dtype.char in "SaUO":
            raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, dicts or "
                            f"lists; found {elem.dtype}")
        return default_collate([factories.as_tensor(b) for b in batch])
    if isinstance(elem, (np.bool_, np.number)):
        return factories.as_tensor(np.array(batch))
    if isinstance(elem, int):
        return tensor(batch)  # int64 (bool if every sample is a bool)
    if isinstance(elem, float):
        return tensor(batch, dtype=np.dtype("float64"))
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        collated = {key: default_collate([d[key] for d in batch]) for key in elem}
        try:
            return type(elem)(collated)  # an OrderedDict stays one, as in torch
        except TypeError:
            return collated
    # a field's samples are collated as zip gives them, a tuple: strings come back as that tuple, as in torch
    if _is_namedtuple(elem):
        return type(elem)(*(default_collate(samples) for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        if any(len(sample) != len(elem) for sample in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        return [default_collate(samples) for samples in zip(*batch)]
    raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
                    f"found {type(elem)}")


def default_convert(data):
    """What ``batch_size=None`` does to each sample: NumPy arrays and scalars become tensors, containers
    are converted element by element, everything else stays."""
    if isinstance(data, np.ndarray) and data.dtype.char not in "SaUO":
        return factories.as_tensor(data)
    if isinstance(data, (np.bool_, np.number)):
        return factories.as_tensor(data)
    if isinstance(data, collections.abc.Mapping):
        return {key: default_convert(value) for key, value in data.items()}
    if _is_namedtuple(data):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        return [default_convert(d) for d in data]
    return data


def get_worker_info():
    """In a DataLoader worker (``num_workers > 0``): its ``WorkerInfo`` (``id``, ``num_workers``, ``seed``,
    its ``dataset`` copy); in the main process None, as torch's."""
    return data_workers.current()


# ---- the loader -------------------------------------------------------------------------------------
class DataLoader:
    """torch's ``DataLoader``: batches of ``dataset`` in the sampler's order, collated by
    ``collate_fn`` (``default_collate``). ``shuffle=True`` reshuffles at every epoch."""

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None, num_workers=0,
                 collate_fn=None, pin_memory=False, drop_last=False, timeout=0, worker_init_fn=None,
                 multiprocessing_context=None, generator=None, *, prefetch_factor=None,
                 persistent_workers=False, pin_memory_device="", in_order=True):
        _check_workers(num_workers, timeout, prefetch_factor, persistent_workers)
        self.multiprocessing_context = _checked_context(multiprocessing_context, num_workers)
        self.dataset, self.num_workers, self.pin_memory, self.timeout = dataset, num_workers, pin_memory, timeout
        self.generator, self.prefetch_factor = generator, prefetch_factor
        self.worker_init_fn, self.persistent_workers, self._workers = worker_init_fn, persistent_workers, None
        if _is_stream(dataset):
            if shuffle not in (None, False):
                raise ValueError(f"DataLoader with IterableDataset: expected unspecified shuffle option, but got "
                                 f"shuffle={shuffle}")
            if sampler is not None or batch_sampler is not None:
                raise ValueError("DataLoader with IterableDataset: expected unspecified sampler / batch_sampler "
                                 "option")
        elif sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, "
                                 "sampler, and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with "
                             "drop_last")
        if sampler is None and not _is_stream(dataset):
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None and sampler is not None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.batch_size, self.drop_last = batch_size, drop_last
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self._auto_collation = batch_sampler is not None or (_is_stream(dataset)
                                                             and batch_size is not None)
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self._initialized = True

    # what the batch sampler was built from when the loader was made: torch refuses to change them after (a new
    # batch_size would otherwise be ignored in silence); collate_fn, num_workers, ... stay settable, read live
    _FIXED_AFTER_INIT = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers")

    def __setattr__(self, attr, val):
        if self.__dict__.get("_initialized") and attr in self._FIXED_AFTER_INIT:
            raise ValueError(f"{attr} attribute should not be set after {type(self).__name__} is initialized")
        super().__setattr__(attr, val)

    def __iter__(self):
        if self.num_workers == 0 and self.timeout:  # torch's single-process iterator waits on no worker
            raise AssertionError("_SingleProcessDataLoaderIter requires timeout == 0")
        batches = self._batches()
        if not self.pin_memory:
            return batches
        if not accelerator.is_available():  # torch's warning, at each new iterator
            warnings.warn("'pin_memory' argument is set as true but no accelerator is found, then device pinned "
                          "memory won't be used.", stacklevel=2)
            return batches
        return (_pinned(batch) for batch in batches)

    def _batches(self):
        if self._workers is not None:  # persistent workers: torch's iterator is reset, no new base seed
            return self._iter_workers(self._workers)
        # torch's iterator draws a base seed for its workers (from generator=, or the global
        # generator) when it is made, even with no workers: the same seed leaves the same stream
        # after a loop over a loader as in torch
        self._base_seed = _drawn_seed(self.generator)
        if self.num_workers:
            workers = data_workers.start(self, self._base_seed)
            if self.persistent_workers:
                self._workers = workers
            return self._iter_workers(workers)
        if _is_stream(self.dataset):
            return self._stream_batches(iter(self.dataset), self.collate_fn)
        return (self._fetch(index, self.dataset, self.collate_fn) for index in self._index_sampler())

    def _persistent_workers_state(self):
        """The persistent workers' base seed and generator states; None while there are none (before the first
        epoch, or without ``persistent_workers``). ``minilora.train``'s checkpoints keep it at each epoch's start:
        a run resumed in a later epoch goes on with the workers the run had, not new ones seeded afresh."""
        if self._workers is None:
            return None
        return {"base_seed": self._base_seed, "workers": [list(worker._states) for worker in self._workers]}

    def _load_persistent_workers_state(self, state):
        """Set back what ``_persistent_workers_state`` returned: workers made (and initialised) anew with that
        base seed, each with its saved generators."""
        self._workers = None
        if state is None:
            return
        if len(state["workers"]) != self.num_workers:
            raise ValueError(f"its DataLoader had {len(state['workers'])} persistent workers, this one has "
                             f"{self.num_workers}: not the same train_data")
        self._base_seed = int(state["base_seed"])
        self._workers = data_workers.start(self, self._base_seed)
        for worker, states in zip(self._workers, state["workers"]):
            worker._states = tuple(states)

    def _index_sampler(self):
        """What each fetch takes: a batch's indices, or one index (``batch_size=None``)."""
        return self.batch_sampler if self.batch_sampler is not None else self.sampler

    def _fetch(self, index, dataset, collate_fn):
        if self.batch_sampler is None:  # batch_size=None: one converted sample at a time
            return collate_fn(dataset[index])
        getitems = getattr(dataset, "__getitems__", None)
        return collate_fn(getitems(index) if getitems is not None else [dataset[i] for i in index])

    def _stream_batches(self, stream, collate_fn):
        if self.batch_size is None:
            yield from (collate_fn(sample) for sample in stream)
            return
        while batch := list(itertools.islice(stream, self.batch_size)):
            if len(batch) < self.batch_size and self.drop_last:
                return
            yield collate_fn(batch)

    def _iter_workers(self, workers):
        """torch's multi-process iterator: batch ``k`` from worker ``k % num_workers`` (the sampler runs in
        the main process); an IterableDataset's workers each read their own copy, in turn, until each ends."""
        if not _is_stream(self.dataset):
            for k, index in enumerate(self._index_sampler()):
                with workers[k % len(workers)].running() as worker:
                    batch = self._fetch(index, worker.info.dataset, worker.collate_fn)
                yield batch
            return
        for worker in workers:  # each epoch, each worker makes a new iterator over its copy
            with worker.running():
                worker.batches = self._stream_batches(iter(worker.info.dataset), worker.collate_fn)
        active = list(workers)
        while active:
            for worker in list(active):
                with worker.running():
                    batch = next(worker.batches, _ENDED)
                if batch is _ENDED:
                    active.remove(worker)
                else:
                    yield batch

    def __len__(self):
        if _is_stream(self.dataset):
            n = len(self.dataset)
            if self.batch_size is None:
                return n
            return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return len(self.batch_sampler if self.batch_sampler is not None else self.sampler)


_ENDED = object()  # a worker's stream has no batch left


def _pinned(data):
    """torch's walk over a batch with ``pin_memory=True``: every tensor pinned, its containers rebuilt (a
    tuple as a list, as torch's)."""
    if hasattr(data, "pin_memory") and not isinstance(data, (str, bytes)):
        return data.pin_memory()
    if isinstance(data, collections.abc.Mapping):
        try:
            return type(data)({key: _pinned(value) for key, value in data.items()})
        except TypeError:
            return {key: _pinned(value) for key, value in data.items()}
    if _is_namedtuple(data):
        return type(data)(*(_pinned(d) for d in data))
    if isinstance(data, tuple):
        return [_pinned(d) for d in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        try:
            return type(data)([_pinned(d) for d in data])
        except TypeError:
            return [_pinned(d) for d in data]
    return data


def _checked_context(context, num_workers):
    """torch's check of ``multiprocessing_context``: only with workers, a start method's name or a context (the
    workers run in-process here, so the context is kept, not used)."""
    if context is None:
        return None
    if num_workers == 0:
        raise ValueError("multiprocessing_context can only be used with multi-process loading (num_workers > 0), "
                         f"but got num_workers={num_workers}")
    if isinstance(context, str):
        import multiprocessing
        methods = multiprocessing.get_all_start_methods()
        if context not in methods:
            raise ValueError(f"multiprocessing_context option should specify a valid start method in {methods!r}, "
                             f"but got multiprocessing_context={context!r}")
        return multiprocessing.get_context(context)
    return context


def _check_workers(num_workers, timeout, prefetch_factor, persistent_workers):
    """torch's checks on the worker options."""
    if num_workers < 0:
        raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable "
                         "multiprocessing.")
    if timeout < 0:
        raise ValueError("timeout option should be non-negative")
    if num_workers == 0 and prefetch_factor is not None:
        raise ValueError("prefetch_factor option could only be specified in multiprocessing."
                         "let num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor to None.")
    if persistent_workers and num_workers == 0:
        raise ValueError("persistent_workers option needs num_workers > 0")


# torch.utils.data is a package: its classes live in submodules that tutorials name (``torch.utils.data.distributed.
# DistributedSampler`` in the DDP tutorial, ``torch.utils.data.dataloader.default_collate``, ``...sampler.
# SubsetRandomSampler``). Here they are one module; each submodule's name holds the same objects (and imports,
# ``from minilora.utils.data.sampler import RandomSampler``).
_SUBMODULES = {
    "dataset": ["Dataset", "IterableDataset", "TensorDataset", "StackDataset", "ConcatDataset", "ChainDataset",
                "Subset", "random_split"],
    "sampler": ["BatchSampler", "RandomSampler", "Sampler", "SequentialSampler", "SubsetRandomSampler",
                "WeightedRandomSampler"],
    "dataloader": ["DataLoader", "get_worker_info", "default_collate", "default_convert"],
    "distributed": ["DistributedSampler"],
}


def _submodule(name, names):
    module = types.ModuleType(f"{__name__}.{name}", f"torch.utils.data.{name}'s names: {', '.join(names)}.")
    for attribute in names:
        setattr(module, attribute, globals()[attribute])
    module.__all__ = list(names)
    sys.modules[module.__name__] = module
    return module


dataset, sampler, dataloader, distributed = (_submodule(name, names) for name, names in _SUBMODULES.items())
