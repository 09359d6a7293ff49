"""Several processes, one training run: torch.distributed's names over MPI (CPUs) and NCCL (GPUs).

Data parallelism runs the same program in ``p`` processes (*ranks*), started by a launcher::

    mpirun -n 2 python train.py          # or: mpirun -n 2 minilora train ...

Each rank holds the whole model and trains on its own slice of every batch; after ``backward()``
the ranks *all-reduce* their gradients (every rank ends up with the sum, then divides by ``p``), so
every rank takes the same optimizer step. That is ``minilora.nn.parallel.DistributedDataParallel``;
this module is the communication underneath it, with torch.distributed's names::

    import minilora.distributed as dist
    dist.init_process_group(backend="mpi")        # "nccl" for cuda tensors
    dist.get_rank(), dist.get_world_size()
    dist.all_reduce(t)                            # in place: t becomes the sum over the ranks
    dist.broadcast(t, src=0)                      # in place: t becomes rank 0's t
    dist.barrier(); dist.destroy_process_group()

minilora does not implement the network itself: it uses proven engines. ``backend="mpi"`` runs on
``mpi4py`` (``pip install minilora[distributed]`` brings it and an MPI library; rank and world size
come from the launcher). ``backend="nccl"`` runs on CuPy's ``cupy.cuda.nccl`` for tensors on the
GPU: NCCL needs every rank to hold the same *unique id* before it can connect, and MPI carries it
(rank 0 makes the id, ``MPI.bcast`` hands it to the others).

A rank that fails must not leave the others waiting forever: every collective waits at most
``timeout`` (``init_process_group(timeout=...)``, 30 minutes by default as in torch) and then raises
``DistBackendError`` naming the operation. After that the group is unusable (a collective cannot be
taken back half-way); ``minilora train`` then aborts the whole job. With several ranks, an uncaught
exception in any rank aborts the whole job at once (``MPI_Abort``), as ``python -m mpi4py`` does.

``comm_stats()`` (minilora's own) counts the calls and bytes each collective sent, so the cost of
data parallelism can be measured rather than computed: see ``benchmarks/distributed.py``.
"""
import datetime
import enum
import os
import sys
import time

import numpy as np

from .tensor import Tensor

__all__ = ["ReduceOp", "init_process_group", "destroy_process_group", "is_available", "is_initialized",
           "is_mpi_available", "is_nccl_available", "get_rank", "get_world_size", "get_backend",
           "barrier", "all_reduce", "broadcast", "DistError", "DistBackendError", "comm_stats",
           "reset_comm_stats", "launcher_world_size", "local_world_size", "abort"]

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)  # torch's default for its CPU backends


class DistError(RuntimeError):
    """torch.distributed's base error."""


class DistBackendError(DistError):
    """A collective failed or timed out (another rank is stuck or gone)."""


class ReduceOp(enum.Enum):
    """How ``all_reduce`` combines the ranks' tensors (torch.distributed.ReduceOp's members)."""
    SUM = "sum"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    AVG = "avg"  # the SUM divided by the world size


# --------------------------------------------------------------------------------------------------
# Which launcher started us: read from its environment, without importing MPI
# --------------------------------------------------------------------------------------------------
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def launcher_world_size():
    """How many processes the MPI launcher started (1 when not started by one): Open MPI's
    ``OMPI_COMM_WORLD_SIZE``, MPICH/Hydra's ``PMI_SIZE``."""
    for name in _SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def is_mpi_available():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def is_nccl_available():
    try:
        from cupy.cuda import nccl  # noqa: F401
    except Exception:  # ImportError, or CuPy without a GPU driver
        return False
    return True


def is_available():
    """Whether minilora can communicate at all here (mpi4py is installed)."""
    return is_mpi_available()


# --------------------------------------------------------------------------------------------------
# Waiting with a deadline
# --------------------------------------------------------------------------------------------------
def _wait(done, what, timeout):
    """Poll ``done()`` until it is true; after ``timeout`` seconds raise ``DistBackendError``.
    Sleeps grow from 0 to 5 ms: a fast collective is seen at once, a slow one costs no CPU."""
    deadline = time.monotonic() + timeout
    pause = 0.0
    while not done():
        if time.monotonic() > deadline:
            raise DistBackendError(
                f"{what} timed out after {timeout:g} s on rank {get_rank()} of {get_world_size()}: "
                f"another rank failed, was killed or is stuck (look at its output). The process group "
                f"cannot be used any more.")
        time.sleep(pause)
        pause = min(max(pause * 2, 1e-4), 5e-3)


# --------------------------------------------------------------------------------------------------
# The two engines. Each works on raw arrays, in place.
# --------------------------------------------------------------------------------------------------
class _MPIBackend:
    name = "mpi"

    def __init__(self, comm, timeout):
        self.comm, self.timeout = comm, timeout

    def _mpi_op(self, op):
        from mpi4py import MPI
        return {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD,
                ReduceOp.MIN: MPI.MIN, ReduceOp.MAX: MPI.MAX}[op]

    @staticmethod
    def _host(array):
        """MPI reads host memory: a CuPy array is copied over and back (no CUDA-aware MPI assumed)."""
        return array.get() if hasattr(array, "get") and not isinstance(array, np.ndarray) else array

    def all_reduce(self, array, op):
        from mpi4py import MPI
        host = np.ascontiguousarray(self._host(array))
        request = self.comm.Iallreduce(MPI.IN_PLACE, host, op=self._mpi_op(op))
        _wait(request.Test, "all_reduce", self.timeout)
        if host is not array:
            array[...] = _to_like(host, array)

    def broadcast(self, array, src):
        host = np.ascontiguousarray(self._host(array))
        request = self.comm.Ibcast(host, root=src)
        _wait(request.Test, "broadcast", self.timeout)
        if host is not array:
            array[...] = _to_like(host, array)

    def barrier(self):
        _wait(self.comm.Ibarrier().Test, "barrier", self.timeout)

    def close(self):
        pass


def _to_like(host, array):
    """``host`` (NumPy) as an array of ``array``'s library (CuPy for a GPU array)."""
    if isinstance(array, np.ndarray):
        return host
    import cupy
    return cupy.asarray(host)


def _nccl_communicator(mpi_comm, nccl):
    """NCCL's rendezvous over MPI: rank 0 makes the unique id, MPI broadcasts it, and every rank
    builds its communicator from (world size, id, rank). ``nccl`` is ``cupy.cuda.nccl`` (a test
    passes a fake)."""
    rank = mpi_comm.Get_rank()
    unique_id = nccl.get_unique_id() if rank == 0 else None
    unique_id = mpi_comm.bcast(unique_id, root=0)
    return nccl.NcclCommunicator(mpi_comm.Get_size(), unique_id, rank)


class _NCCLBackend:
    """NCCL on CuPy arrays. The collective is queued on the current stream; waiting polls an event,
    and a timeout aborts the communicator (NCCL's own way out of a hung collective)."""
    name = "nccl"

    def __init__(self, mpi_comm, timeout):
        import cupy
        from cupy.cuda import nccl
        from mpi4py import MPI
        self.cupy, self.nccl, self.mpi_comm, self.timeout = cupy, nccl, mpi_comm, timeout
        local_rank = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()  # ranks on this machine
        cupy.cuda.Device(local_rank % cupy.cuda.runtime.getDeviceCount()).use()
        self.comm = _nccl_communicator(mpi_comm, nccl)

    def _dtype(self, array):
        nccl = self.nccl
        table = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
                 np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.int32): nccl.NCCL_INT32,
                 np.dtype(np.int64): nccl.NCCL_INT64}
        if array.dtype not in table:
            raise TypeError(f"NCCL cannot reduce {array.dtype} arrays")
        return table[array.dtype]

    def _check(self, array):
        if isinstance(array, np.ndarray):
            raise ValueError("backend='nccl' communicates tensors on the GPU only; this one is on the CPU "
                             "(move it with .to('cuda'), or use backend='mpi')")
        if not array.flags.c_contiguous:
            raise ValueError("NCCL needs a contiguous tensor")

    def _finish(self, what):
        event = self.cupy.cuda.Event()
        event.record()
        try:
            _wait(lambda: event.done, what, self.timeout)
        except DistBackendError:
            self.comm.abort()  # frees the GPU from the collective that will never complete
            raise

    def all_reduce(self, array, op):
        self._check(array)
        nccl = self.nccl
        nccl_op = {ReduceOp.SUM: nccl.NCCL_SUM, ReduceOp.AVG: nccl.NCCL_SUM, ReduceOp.PRODUCT: nccl.NCCL_PROD,
                   ReduceOp.MIN: nccl.NCCL_MIN, ReduceOp.MAX: nccl.NCCL_MAX}[op]
        stream = self.cupy.cuda.get_current_stream().ptr
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._dtype(array), nccl_op, stream)
        self._finish("all_reduce")

    def broadcast(self, array, src):
        self._check(array)
        stream = self.cupy.cuda.get_current_stream().ptr
        self.comm.bcast(array.data.ptr, array.size, self._dtype(array), src, stream)
        self._finish("broadcast")

    def barrier(self):
        """NCCL has no barrier: an all-reduce of one number is one (torch does the same)."""
        self.all_reduce(self.cupy.zeros(1, self.cupy.float32), ReduceOp.SUM)

    def close(self):
        self.comm.destroy()


# --------------------------------------------------------------------------------------------------
# The process group (one, the default: torch's "WORLD")
# --------------------------------------------------------------------------------------------------
_group = None
_stats = {}


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1):
    """Join the ranks the launcher started. ``backend``: ``"mpi"`` (CPU tensors; the default) or
    ``"nccl"`` (GPU tensors). Rank and world size come from MPI; ``world_size``/``rank``, when given,
    must agree with it. ``timeout`` (a ``datetime.timedelta`` or seconds) bounds every collective."""
    global _group
    if _group is not None:
        raise RuntimeError("trying to initialize the default process group twice!")
    backend = "mpi" if backend is None else str(backend).lower()
    if backend not in ("mpi", "nccl"):
        raise ValueError(f"init_process_group: backend must be 'mpi' or 'nccl' in minilora, got {backend!r} "
                         f"(gloo's role, CPU tensors, is played by 'mpi')")
    if init_method not in (None, "env://"):
        raise ValueError("init_process_group: minilora's ranks meet through the MPI launcher "
                         f"(mpirun -n N ...); init_method={init_method!r} is not supported")
    if not is_mpi_available():
        raise RuntimeError("init_process_group: mpi4py is not installed; pip install 'minilora[distributed]' "
                           "brings it and an MPI library, then start the program with mpirun -n N")
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else \
        DEFAULT_TIMEOUT.total_seconds() if timeout is None else float(timeout)
    if not seconds > 0:
        raise ValueError(f"init_process_group: timeout must be positive, got {timeout!r}")
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    for name, given, actual in (("world_size", world_size, comm.Get_size()), ("rank", rank, comm.Get_rank())):
        if given not in (-1, None) and given != actual:
            raise ValueError(f"init_process_group: {name}={given}, but the MPI launcher started this process "
                             f"with {name} {actual}")
    if backend == "nccl" and not is_nccl_available():
        raise RuntimeError("init_process_group(backend='nccl') needs CuPy with NCCL and a GPU "
                           "(pip install 'minilora[cuda]'); on CPUs use backend='mpi'")
    engine = _NCCLBackend(comm, seconds) if backend == "nccl" else _MPIBackend(comm, seconds)
    _group = {"comm": comm, "backend": engine, "rank": comm.Get_rank(), "size": comm.Get_size(),
              "excepthook": sys.excepthook}
    if comm.Get_size() > 1:
        sys.excepthook = _abort_on_uncaught_exception
    reset_comm_stats()


def _abort_on_uncaught_exception(kind, value, traceback):
    """An exception that ends this rank's program ends every rank (as ``python -m mpi4py`` does):
    the others would otherwise wait for it until their timeout."""
    _group["excepthook"](kind, value, traceback)  # the traceback, as usual
    print(f"rank {_group['rank']} of {_group['size']} failed: stopping every rank (MPI_Abort)", file=sys.stderr,
          flush=True)
    abort(1)


def _require_group(what):
    if _group is None:
        raise ValueError(f"{what}: Default process group has not been initialized, please make sure to call "
                         "init_process_group.")
    return _group


def _no_group_argument(group, what):
    if group is not None:
        raise ValueError(f"{what}: minilora has the default group only (group=None)")


def is_initialized():
    return _group is not None


def destroy_process_group(group=None):
    """Leave the group (MPI itself is finalized when the process exits)."""
    global _group
    _no_group_argument(group, "destroy_process_group")
    if _group is not None:
        _group["backend"].close()
        if sys.excepthook is _abort_on_uncaught_exception:
            sys.excepthook = _group["excepthook"]
        _group = None


def get_rank(group=None):
    _no_group_argument(group, "get_rank")
    return _require_group("get_rank")["rank"]


def get_world_size(group=None):
    _no_group_argument(group, "get_world_size")
    return _require_group("get_world_size")["size"]


def get_backend(group=None):
    _no_group_argument(group, "get_backend")
    return _require_group("get_backend")["backend"].name


def _count(what, nbytes):
    calls, total = _stats.get(what, (0, 0))
    _stats[what] = (calls + 1, total + int(nbytes))


def comm_stats():
    """``{"all_reduce": {"calls": n, "bytes": b}, ...}`` since ``init_process_group`` or
    ``reset_comm_stats()``: the bytes each call put in from this rank (the payload)."""
    return {what: {"calls": calls, "bytes": nbytes} for what, (calls, nbytes) in _stats.items()}


def reset_comm_stats():
    _stats.clear()


def _check_call(tensor, group, async_op, what):
    _no_group_argument(group, what)
    if async_op:
        raise ValueError(f"{what}: async_op=True is not supported in minilora (each collective completes "
                         "before it returns)")
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{what}: expected a minilora Tensor, got {type(tensor).__name__}")
    return _require_group(what)


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """In place: every rank's ``tensor`` becomes the reduction (``op``) of all ranks' tensors.
    Returns None, as torch does with ``async_op=False``."""
    g = _check_call(tensor, group, async_op, "all_reduce")
    if not isinstance(op, ReduceOp):
        raise ValueError(f"all_reduce: op must be a ReduceOp, got {op!r}")
    array = tensor._array
    if not array.flags.c_contiguous:
        raise ValueError("all_reduce: the tensor must be contiguous (call .contiguous() first)")
    g["backend"].all_reduce(array, op)
    if op is ReduceOp.AVG:
        array /= g["size"]
    tensor._bump_version()  # an in-place change, as far as autograd's version checks go
    _count("all_reduce", array.nbytes)


def broadcast(tensor, src, group=None, async_op=False):
    """In place: every rank's ``tensor`` becomes rank ``src``'s."""
    g = _check_call(tensor, group, async_op, "broadcast")
    if not 0 <= int(src) < g["size"]:
        raise ValueError(f"broadcast: src={src} is not a rank (world size {g['size']})")
    array = tensor._array
    if not array.flags.c_contiguous:
        raise ValueError("broadcast: the tensor must be contiguous (call .contiguous() first)")
    g["backend"].broadcast(array, int(src))
    tensor._bump_version()
    _count("broadcast", array.nbytes)


def barrier(group=None, async_op=False, device_ids=None):
    """Wait until every rank has reached its ``barrier()``."""
    _no_group_argument(group, "barrier")
    if async_op:
        raise ValueError("barrier: async_op=True is not supported in minilora")
    _require_group("barrier")["backend"].barrier()
    _count("barrier", 0)


def local_world_size():
    """How many ranks of the group run on this machine (they share its cores)."""
    from mpi4py import MPI
    return _require_group("local_world_size")["comm"].Split_type(MPI.COMM_TYPE_SHARED).Get_size()


def abort(exit_code=1):
    """End every rank of the job now (MPI_Abort): what a rank that failed does so the others do not
    wait for it until their timeout."""
    from mpi4py import MPI
    MPI.COMM_WORLD.Abort(exit_code)
