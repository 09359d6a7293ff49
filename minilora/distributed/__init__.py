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

and the rest of torch.distributed's collectives, with its argument names and checks:
``all_gather``, ``all_gather_into_tensor``, ``reduce``, ``reduce_scatter``, ``reduce_scatter_tensor``,
``gather``, ``scatter``, ``all_to_all_single``, ``all_to_all``, point to point ``send``/``recv``/``isend``/``irecv``/``batch_isend_irecv``,
the pickled-object versions (``all_gather_object``, ``broadcast_object_list``, ``gather_object``,
``scatter_object_list``, ``send_object_list``/``recv_object_list``), ``monitored_barrier``, and sub-groups (``new_group(ranks)``; ranks
outside a group get ``GroupMember.NON_GROUP_MEMBER``, and a collective they call on it warns and
does nothing, as torch). ``src``/``dst`` are global ranks, ``group_src``/``group_dst`` ranks in the
group. ``async_op=True`` returns a ``Work`` whose ``wait()`` finishes the operation (MPI runs it
meanwhile: the tensors must not be touched until then); ``work.get_future()`` is its Future.
Non-contiguous tensors travel through a contiguous copy that is written back.

Floating-point sums and products over three ranks or more (``all_reduce``, ``reduce``, the
``reduce_scatter`` pair) are added in the order torch's gloo backend adds them (its ring:
``distributed/_ring_order.py``), each step rounded to the tensor's dtype, so they have gloo's bits (MPI's
own order is its library's choice); with two ranks there is one order. Other
reductions of float16/bfloat16 run in float32, rounded once (MPI has no 16-bit float type); bool
tensors reduce as 0/1 (SUM and MAX are "or", PRODUCT and MIN "and"). ``ReduceOp.AVG`` is the SUM
divided by the group's size (floating-point tensors only); ``BAND``/``BOR``/``BXOR`` need integer
or bool tensors.

minilora does not implement the network itself: it uses proven engines. ``backend="mpi"`` runs on
``mpi4py`` (``pip install minilora[distributed]`` brings it and an MPI library; rank and world size
come from the launcher). ``backend="nccl"`` runs on CuPy's ``cupy.cuda.nccl`` for tensors on the
GPU: NCCL needs every rank to hold the same *unique id* before it can connect, and MPI carries it
(rank 0 makes the id, ``MPI.bcast`` hands it to the others). The NCCL backend does ``all_reduce``,
``broadcast`` and ``barrier`` (what DDP needs); the other collectives need ``backend="mpi"``.

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
import pickle
import sys
import time
import warnings

import numpy as np

from .. import dtypes
from ..futures import Future
from ..tensor import Tensor

__all__ = ["ReduceOp", "init_process_group", "destroy_process_group", "is_available", "is_initialized",
           "is_mpi_available", "is_nccl_available", "get_rank", "get_world_size", "get_backend",
           "new_group", "ProcessGroup", "GroupMember", "group", "get_process_group_ranks", "get_global_rank",
           "get_group_rank", "Work", "Future", "GradBucket", "BuiltinCommHookType", "_DEFAULT_FIRST_BUCKET_BYTES", "barrier", "monitored_barrier", "all_reduce", "broadcast", "reduce",
           "all_gather", "all_gather_into_tensor", "reduce_scatter", "reduce_scatter_tensor", "gather",
           "scatter", "all_to_all_single", "all_to_all", "send", "recv", "isend", "irecv", "P2POp", "batch_isend_irecv", "all_gather_object",
           "broadcast_object_list", "gather_object", "scatter_object_list", "DistError", "DistBackendError",
           "send_object_list", "recv_object_list", "is_torchelastic_launched", "get_node_local_rank",
           "default_pg_timeout", "comm_stats", "reset_comm_stats", "launcher_world_size", "local_world_size", "abort"]

_DEFAULT_FIRST_BUCKET_BYTES = 2 ** 20  # torch's: DDP's first bucket when bucket_cap_mb is left out
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)  # torch's default for its CPU backends
default_pg_timeout = DEFAULT_TIMEOUT  # torch's name for it


class DistError(RuntimeError):
    """torch.distributed's base error."""


class DistBackendError(DistError):
    """A collective failed or timed out (another rank is stuck or gone)."""


class ReduceOp(enum.Enum):
    """How the ranks' tensors are combined (torch.distributed.ReduceOp's members)."""
    SUM = "sum"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    AVG = "avg"  # the SUM divided by the group's size
    BAND = "band"
    BOR = "bor"
    BXOR = "bxor"


_BITWISE = (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR)


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


def is_torchelastic_launched():
    """torch's: whether torchrun (torchelastic) started this process, read off ``TORCHELASTIC_RUN_ID``."""
    return os.getenv("TORCHELASTIC_RUN_ID") is not None


def get_node_local_rank(fallback_rank=None):
    """torch's: this process's rank on its machine, from the launcher's ``LOCAL_RANK`` (``fallback_rank``
    without one; torch's error without either)."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    if fallback_rank is not None:
        return int(fallback_rank)
    raise RuntimeError("LOCAL_RANK is not in the environment. Consider passing fallback_rank to allow "
                       "`get_node_local_rank` to work, assuming you are not running in a multi-device context and "
                       "want the code to run locally instead.")


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
# The two engines. Each starts operations on raw arrays and returns what to wait on.
# --------------------------------------------------------------------------------------------------
def _host(array):
    """MPI reads host memory: a CuPy array is copied over (no CUDA-aware MPI assumed)."""
    return array.get() if hasattr(array, "get") and not isinstance(array, np.ndarray) else array


def _reduction_dtype(dtype):
    """The dtype MPI reduces ``dtype`` in: MPI has no 16-bit float type, so float16/bfloat16 add in
    float32 and round once at the end (as torch's CPU kernels); bool adds as int32 0/1."""
    if dtype.itemsize == 2 and dtypes.is_floating(dtype):
        return np.dtype(np.float32)
    return np.dtype(np.int32) if dtype == np.bool_ else dtype


class _MPIBackend:
    """MPI on host (NumPy) arrays. Every method starts a non-blocking MPI operation and returns its
    requests: ``Work.wait`` waits on them within the timeout."""
    name = "mpi"

    def __init__(self, comm, timeout):
        self.comm, self.timeout = comm, timeout

    # ---- what goes in and out: host buffers -------------------------------------------------------
    @staticmethod
    def reduction_buffer(array):
        """``array`` as a contiguous host array in its reduction dtype: the array itself when it
        already is one (then MPI reduces in place), otherwise a copy to write back after."""
        host = np.ascontiguousarray(_host(array))
        wanted = _reduction_dtype(host.dtype)
        return host if host.dtype == wanted else host.astype(wanted)

    @staticmethod
    def byte_buffer(array):
        """``array``'s bytes, contiguous, on the host (moving data needs no dtype: MPI sends bytes)."""
        return np.ascontiguousarray(_host(array)).reshape(-1).view(np.uint8)

    def _mpi_op(self, op):
        from mpi4py import MPI
        return {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD, ReduceOp.MIN: MPI.MIN,
                ReduceOp.MAX: MPI.MAX, ReduceOp.BAND: MPI.BAND, ReduceOp.BOR: MPI.BOR, ReduceOp.BXOR: MPI.BXOR}[op]

    # ---- collectives (ranks are ranks of this communicator) ----------------------------------------
    def all_reduce(self, buf, op, dtype=None):
        """``dtype``: the tensor's own (``buf`` may hold a 16-bit one widened). With three ranks or more a
        floating-point sum or product is added in torch's gloo order (``_ring_order``), not MPI's."""
        from mpi4py import MPI
        dtype = dtype or buf.dtype
        if _ring_order_applies(self.comm, op, dtype):
            def fold(gathered):
                buf.reshape(-1)[...] = _ring_sum(gathered, dtype, op)
            return [_RingOrdered(self.comm, (buf.size,), buf.dtype,
                                 lambda gathered: self.comm.Iallgather(buf.reshape(-1), gathered), fold)]
        return [self.comm.Iallreduce(MPI.IN_PLACE, buf, op=self._mpi_op(op))]

    def broadcast(self, buf, root):
        return [self.comm.Ibcast(buf, root=root)]

    def reduce(self, buf, root, op, dtype=None):
        from mpi4py import MPI
        dtype = dtype or buf.dtype
        if _ring_order_applies(self.comm, op, dtype):  # gloo's reduce: its ring, the chunks sent to the root
            is_root = self.comm.Get_rank() == root

            def fold(gathered):
                if is_root:
                    buf.reshape(-1)[...] = _ring_sum(gathered, dtype, op, reduce=True)
            return [_RingOrdered(self.comm, (buf.size,) if is_root else (0,), buf.dtype, lambda gathered:
                                 self.comm.Igather(buf.reshape(-1), gathered if is_root else None, root=root), fold)]
        if self.comm.Get_rank() == root:
            return [self.comm.Ireduce(MPI.IN_PLACE, buf, op=self._mpi_op(op), root=root)]
        return [self.comm.Ireduce(buf, None, op=self._mpi_op(op), root=root)]

    def reduce_scatter(self, send, recv, op, dtype=None, whole=False):
        """Rank r's ``recv`` gets the reduction of every rank's ``send[r]``; ``whole``: gloo's order for
        those numbers as part of the whole ``send`` buffer (reduce_scatter_tensor), else as a buffer alone."""
        dtype = dtype or send.dtype
        if _ring_order_applies(self.comm, op, dtype):
            where = dict(offset=self.comm.Get_rank() * recv.size, total=send.size) if whole else {}

            def fold(gathered):
                recv[...] = _ring_sum(gathered, dtype, op, **where)
            return [_RingOrdered(self.comm, (recv.size,), send.dtype,
                                 lambda gathered: self.comm.Ialltoall(send, gathered), fold)]
        return [self.comm.Ireduce_scatter_block(send, recv, op=self._mpi_op(op))]

    def all_gather(self, send, recv, counts=None):
        """``recv`` gets every rank's ``send`` in rank order (``counts``: their sizes, when they differ)."""
        if counts is None:
            return [self.comm.Iallgather(send, recv)]
        return [self.comm.Iallgatherv(send, [recv, counts])]

    def gather(self, send, recv, root, counts=None):
        if counts is None:
            return [self.comm.Igather(send, recv, root=root)]
        return [self.comm.Igatherv(send, [recv, counts] if recv is not None else None, root=root)]

    def scatter(self, send, recv, root, counts=None):
        if counts is None:
            return [self.comm.Iscatter(send, recv, root=root)]
        return [self.comm.Iscatterv([send, counts] if send is not None else None, recv, root=root)]

    def all_to_all(self, send, send_counts, recv, recv_counts):
        """Rank r's ``send`` piece j goes to rank j's piece r (pieces of ``*_counts`` elements, in order)."""
        send_displs = np.concatenate([[0], np.cumsum(send_counts)[:-1]]).astype(int).tolist()
        recv_displs = np.concatenate([[0], np.cumsum(recv_counts)[:-1]]).astype(int).tolist()
        return [self.comm.Ialltoallv([send, (list(send_counts), send_displs)],
                                     [recv, (list(recv_counts), recv_displs)])]

    def barrier(self):
        return [self.comm.Ibarrier()]

    # ---- point to point --------------------------------------------------------------------------
    def send(self, buf, dst, tag):
        return self.comm.Isend(buf, dest=dst, tag=tag)

    def recv(self, buf, src, tag):
        """The request, and a status that ``request.Test(status)`` fills with the sender."""
        from mpi4py import MPI
        return self.comm.Irecv(buf, source=MPI.ANY_SOURCE if src is None else src, tag=tag), MPI.Status()

    def close(self):
        pass


_ORDER_SENSITIVE = (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PRODUCT)


def _is_float(dtype):
    return dtypes.is_floating(dtype) or np.dtype(dtype).kind == "c"


class _RingOrdered:
    """A reduction of floats over three ranks or more with gloo's bits: the numbers each rank must add are
    gathered by one MPI call (``start(gathered)``: an all-gather, a gather or an all-to-all; p - 1 buffers
    come in where a ring moves about two) and ``fold(gathered)`` adds them in gloo's ring order
    (``_ring_order``). ``Test()`` as an MPI request's."""

    def __init__(self, comm, shape, dtype, start, fold):
        self.fold, self.done = fold, False
        self.gathered = np.empty((comm.Get_size(),) + shape, dtype)
        self.request = start(self.gathered)

    def Test(self):
        if not self.done and self.request.Test():
            self.fold(self.gathered)
            self.done = True
        return self.done


def _ring_order_applies(comm, op, dtype):
    """Floats over 3+ ranks, summed or multiplied (a complex product is not gloo's: torch refuses it there)."""
    complex_product = op is ReduceOp.PRODUCT and np.dtype(dtype).kind == "c"
    return comm.Get_size() >= 3 and op in _ORDER_SENSITIVE and _is_float(dtype) and not complex_product


def _ring_sum(gathered, dtype, op, offset=0, total=None, reduce=False):
    """``_ring_order.ring_ordered_sum`` of ``gathered``; a complex buffer as torch hands it to gloo, as its
    real view (twice the numbers: gloo's chunks may split a complex number)."""
    from ._ring_order import ring_ordered_sum
    if np.dtype(gathered.dtype).kind == "c":
        real = gathered.view(gathered.real.dtype)
        total = None if total is None else 2 * total
        return ring_ordered_sum(real, real.dtype, False, 2 * offset, total, reduce).view(gathered.dtype)
    return ring_ordered_sum(gathered, dtype, op is ReduceOp.PRODUCT, offset, total, reduce)


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

    @staticmethod
    def reduction_buffer(array):
        return array  # NCCL reduces the GPU array in place

    byte_buffer = reduction_buffer

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

    def all_reduce(self, array, op, dtype=None):
        self._check(array)
        nccl = self.nccl
        if op in _BITWISE:
            raise ValueError(f"all_reduce: minilora's NCCL backend has no ReduceOp.{op.name}; use backend='mpi'")
        nccl_op = {ReduceOp.SUM: nccl.NCCL_SUM, ReduceOp.AVG: nccl.NCCL_SUM, ReduceOp.PRODUCT: nccl.NCCL_PROD,
                   ReduceOp.MIN: nccl.NCCL_MIN, ReduceOp.MAX: nccl.NCCL_MAX}[op]
        stream = self.cupy.cuda.get_current_stream().ptr
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._dtype(array), nccl_op, stream)
        self._finish("all_reduce")
        return []  # done: nothing left to wait on

    def broadcast(self, array, src):
        self._check(array)
        stream = self.cupy.cuda.get_current_stream().ptr
        self.comm.bcast(array.data.ptr, array.size, self._dtype(array), src, stream)
        self._finish("broadcast")
        return []

    def barrier(self):
        """NCCL has no barrier: an all-reduce of one number is one (torch does the same)."""
        return self.all_reduce(self.cupy.zeros(1, self.cupy.float32), ReduceOp.SUM)

    def close(self):
        self.comm.destroy()


# --------------------------------------------------------------------------------------------------
# Process groups: the default one (torch's WORLD) and the sub-groups of new_group
# --------------------------------------------------------------------------------------------------
class ProcessGroup:
    """A set of ranks that communicate together: ``rank()`` and ``size()`` are this process's rank
    in it and its number of ranks; ``ranks`` are their global ranks, in group-rank order."""

    def __init__(self, comm, backend, ranks, timeout):
        from mpi4py import MPI
        self.comm, self.backend, self.ranks, self.timeout = comm, backend, list(ranks), timeout
        self.monitor_comm = comm.Dup() if comm.Get_size() > 1 else comm  # monitored_barrier's own messages
        self._MPI = MPI

    def rank(self):
        return self.comm.Get_rank()

    def size(self):
        return self.comm.Get_size()

    def group_rank(self, global_rank, what):
        """``global_rank``'s rank in this group (torch's get_group_rank: identity on WORLD)."""
        if self is GroupMember.WORLD:
            return global_rank
        if global_rank not in self.ranks:
            raise ValueError(f"{what}: Global rank {global_rank} is not part of group {self}")
        return self.ranks.index(global_rank)

    def close(self):
        self.backend.close()
        if self.monitor_comm is not self.comm:
            self.monitor_comm.Free()
        if self.comm is not self._MPI.COMM_WORLD:
            self.comm.Free()

    def __repr__(self):
        return f"ProcessGroup(ranks={self.ranks}, backend={self.backend.name!r})"


class GroupMember:
    """``WORLD``: the default group (None before ``init_process_group``); ``NON_GROUP_MEMBER``: what
    ``new_group`` returns to the ranks it leaves out (torch's value, -100)."""
    WORLD = None
    NON_GROUP_MEMBER = -100


group = GroupMember  # torch's ``dist.group.WORLD``
_subgroups = []
_stats = {}


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1, store=None,
                       group_name="", pg_options=None, device_id=None):
    """Join the ranks the launcher started. ``backend``: ``"mpi"`` (CPU tensors; the default) or
    ``"nccl"`` (GPU tensors). Rank and world size come from MPI; ``world_size``/``rank``, when given,
    must agree with it. ``timeout`` (a ``datetime.timedelta`` or seconds) bounds every collective."""
    if GroupMember.WORLD is not None:
        raise RuntimeError("trying to initialize the default process group twice!")
    backend = "mpi" if backend is None else str(backend).lower()
    if backend not in ("mpi", "nccl"):
        raise ValueError(f"init_process_group: backend must be 'mpi' or 'nccl' in minilora, got {backend!r} "
                         f"(gloo's role, CPU tensors, is played by 'mpi')")
    if init_method not in (None, "env://") or store is not None:
        raise ValueError("init_process_group: minilora's ranks meet through the MPI launcher "
                         f"(mpirun -n N ...); init_method={init_method!r} / store= are not supported")
    if not is_mpi_available():
        raise RuntimeError("init_process_group: mpi4py is not installed; pip install 'minilora[distributed]' "
                           "brings it and an MPI library, then start the program with mpirun -n N")
    seconds = _seconds(timeout, DEFAULT_TIMEOUT.total_seconds(), "init_process_group")
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
    world = ProcessGroup(comm, engine, range(comm.Get_size()), seconds)
    world.excepthook = sys.excepthook
    GroupMember.WORLD = world
    if comm.Get_size() > 1:
        sys.excepthook = _abort_on_uncaught_exception
    reset_comm_stats()


def _seconds(timeout, default, what):
    """A timeout (timedelta, seconds or None for ``default``) in seconds; it must be positive."""
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else \
        default if timeout is None else float(timeout)
    if not seconds > 0:
        raise ValueError(f"{what}: timeout must be positive, got {timeout!r}")
    return seconds


def _abort_on_uncaught_exception(kind, value, traceback):
    """An exception that ends this rank's program ends every rank (as ``python -m mpi4py`` does):
    the others would otherwise wait for it until their timeout."""
    world = GroupMember.WORLD
    world.excepthook(kind, value, traceback)  # the traceback, as usual
    print(f"rank {world.rank()} of {world.size()} failed: stopping every rank (MPI_Abort)", file=sys.stderr,
          flush=True)
    abort(1)


def _require_group(what):
    if GroupMember.WORLD is None:
        raise ValueError(f"{what}: Default process group has not been initialized, please make sure to call "
                         "init_process_group.")
    return GroupMember.WORLD


def _resolve(group, what):
    """The ProcessGroup ``group`` names (None: the default one), or None when this rank is not in
    it: then torch warns and the call does nothing."""
    world = _require_group(what)
    if group is None or group is world:
        return world
    if isinstance(group, ProcessGroup):
        if group not in _subgroups:
            raise ValueError(f"{what}: {group} was destroyed (destroy_process_group)")
        return group
    if isinstance(group, int) and group == GroupMember.NON_GROUP_MEMBER:
        warnings.warn(f"Running {what} on global rank {world.rank()} which does not belong to the given group.",
                      stacklevel=3)
        return None
    raise TypeError(f"{what}: group must be a ProcessGroup from new_group (or None), got {type(group).__name__}")


def new_group(ranks=None, timeout=None, backend=None, pg_options=None, use_local_synchronization=False,
              group_desc=None, device_id=None, sort_ranks=True):
    """A group of ``ranks`` (global ranks; all of them when None). Every rank of the default group
    must call it, in the same order as the other ``new_group`` calls, as in torch; the ranks left
    out get ``GroupMember.NON_GROUP_MEMBER``. Group ranks follow ``sorted(ranks)`` (the list's own
    order with ``sort_ranks=False``)."""
    world = _require_group("new_group")
    if use_local_synchronization:
        raise ValueError("new_group: use_local_synchronization=True is not supported: minilora's groups are "
                         "made by every rank of the default group together (MPI_Comm_split)")
    if backend is not None and str(backend).lower() != world.backend.name:
        raise ValueError(f"new_group: backend={backend!r}, but the default group runs {world.backend.name!r}; "
                         "minilora's sub-groups use the default group's backend")
    ranks = list(range(world.size())) if ranks is None else [int(r) for r in ranks]
    if sort_ranks:
        ranks = sorted(ranks)
    if len(set(ranks)) != len(ranks):
        raise ValueError(f"ranks list must not contain duplicate entries, got {ranks}")
    for r in ranks:
        if not 0 <= r < world.size():
            raise ValueError(f"Rank {r} is out of range. Valid ranks are 0 to {world.size() - 1} "
                             f"(world_size={world.size()})")
    seconds = _seconds(timeout, world.timeout, "new_group")
    from mpi4py import MPI
    member = world.rank() in ranks
    comm = world.comm.Split(0 if member else MPI.UNDEFINED, ranks.index(world.rank()) if member else 0)
    if not member:
        return GroupMember.NON_GROUP_MEMBER
    engine = _NCCLBackend(comm, seconds) if world.backend.name == "nccl" else _MPIBackend(comm, seconds)
    made = ProcessGroup(comm, engine, ranks, seconds)
    _subgroups.append(made)
    return made


def is_initialized():
    return GroupMember.WORLD is not None


def destroy_process_group(group=None):
    """Leave ``group``; with None, every group (MPI itself is finalized when the process exits)."""
    world = GroupMember.WORLD
    if world is None and group is None:
        raise AssertionError("Process group cannot be None")  # torch's assert
    if group is not None and group is not world:
        if isinstance(group, ProcessGroup) and group in _subgroups:
            _subgroups.remove(group)
            group.close()
        return
    if world is None:
        return
    for made in _subgroups:
        made.close()
    _subgroups.clear()
    world.close()
    if sys.excepthook is _abort_on_uncaught_exception:
        sys.excepthook = world.excepthook
    GroupMember.WORLD = None


def get_rank(group=None):
    """This process's rank in ``group`` (-1 in a group it is not part of, as torch)."""
    g = _resolve_quietly(group, "get_rank")
    return -1 if g is None else g.rank()


def get_world_size(group=None):
    g = _resolve_quietly(group, "get_world_size")
    return -1 if g is None else g.size()


def _resolve_quietly(group, what):
    if isinstance(group, int) and group == GroupMember.NON_GROUP_MEMBER:
        _require_group(what)
        return None
    return _resolve(group, what)


def get_backend(group=None):
    g = _resolve_quietly(group, "get_backend")
    if g is None:
        raise ValueError("Invalid process group specified")
    return g.backend.name


def get_process_group_ranks(group):
    """The global ranks of ``group``, in group-rank order."""
    return list(_resolve(group, "get_process_group_ranks").ranks)


def get_group_rank(group, global_rank):
    return _resolve(group, "get_group_rank").group_rank(global_rank, "get_group_rank")


def get_global_rank(group, group_rank):
    g = _resolve(group, "get_global_rank")
    if g is GroupMember.WORLD:
        return group_rank
    if not 0 <= group_rank < g.size():
        raise ValueError(f"Group rank {group_rank} is not part of group {g}")
    return g.ranks[group_rank]


def _root(g, global_rank, group_rank, what, name):
    """The root of a rooted collective as a rank of ``g``: from ``src``/``dst`` (a global rank) or
    ``group_src``/``group_dst`` (a group rank), as torch's _canonicalize_group_rank."""
    if group_rank is not None:
        if global_rank is not None:
            raise ValueError("Can't specify both group_rank and global_rank")
        root = int(group_rank)
    elif global_rank is None:
        raise ValueError("Must specify global_rank or group_rank")
    else:
        root = g.group_rank(int(global_rank), what)
    if not 0 <= root < g.size():
        raise RuntimeError(f"{what}: invalid root rank: {root} ({name} must be a rank of the group, whose size "
                           f"is {g.size()})")
    return root


# --------------------------------------------------------------------------------------------------
# Work: a started operation
# --------------------------------------------------------------------------------------------------
class Work:
    """What ``async_op=True`` (and ``isend``/``irecv``) return: ``wait()`` blocks until the
    operation is done (within the group's timeout) and writes its results into the tensors."""

    def __init__(self, what, timeout, tests, finish, result=(), source=None):
        self._what, self._timeout, self._tests, self._finish = what, timeout, tests, finish
        self._result, self._source, self._done, self._exception = list(result), source, False, None

    def _ready(self):
        return all(test() for test in self._tests)

    def is_completed(self):
        if not self._done and self._exception is None and self._ready():
            self._complete()
        return self._done

    def wait(self, timeout=None):
        if not self._done:
            seconds = self._timeout if timeout is None else _seconds(timeout, self._timeout, "Work.wait")
            try:
                _wait(self._ready, self._what, seconds)
            except DistBackendError as error:
                self._exception = error
                raise
            self._complete()
        return True

    def _complete(self):
        self._finish()
        self._done = True

    def is_success(self):
        return self.is_completed() and self._exception is None

    def exception(self):
        return self._exception

    def result(self):
        """The output tensors (torch's Work.result)."""
        return list(self._result)

    def source_rank(self):
        """The global rank a ``recv`` got its tensor from (after ``wait()``)."""
        if self._source is None:
            raise ValueError(f"source_rank: {self._what} is not a recv, or it has not finished")
        return self._source()

    def synchronize(self):
        self.wait()

    def get_future(self):
        """A Future whose ``wait()`` finishes this operation and returns its output tensors."""
        return Future._of(lambda: self.wait() and self.result(), self.is_completed)

    def __repr__(self):
        return f"Work({self._what}, {'completed' if self._done else 'in progress'})"


class BuiltinCommHookType(enum.IntEnum):
    """torch's C++ communication hooks, for ``DistributedDataParallel._register_builtin_comm_hook``:
    ``ALLREDUCE`` computes as ``default_hooks.allreduce_hook``, ``FP16_COMPRESS`` as ``fp16_compress_hook``."""
    ALLREDUCE = 1
    FP16_COMPRESS = 2


class GradBucket:
    """What a DDP communication hook receives (torch's ``dist.GradBucket``): one bucket's gradients
    as one flat ``buffer()`` (not divided by the world size), its ``index()`` in the reducer's order,
    and the ``parameters()`` / ``gradients()`` it holds, in the buffer's order."""

    def __init__(self, index, buffer, parameters, is_last):
        self._index, self._buffer, self._parameters, self._is_last = index, buffer, list(parameters), is_last

    def index(self):
        return self._index

    def buffer(self):
        return self._buffer

    def set_buffer(self, buffer):
        """Replace the flat buffer (the 16-bit wrappers hand their hook a cast copy)."""
        self._buffer = buffer

    def is_last(self):
        """Whether this is the last bucket to be reduced (the first parameters of the model)."""
        return self._is_last

    def parameters(self):
        return list(self._parameters)

    def gradients(self):
        """The buffer's pieces, shaped as the parameters: views, so writing one writes the buffer."""
        pieces, offset = [], 0
        for p in self._parameters:
            n = p._array.size
            pieces.append(self._buffer[offset:offset + n].view(tuple(p.shape)))
            offset += n
        return pieces


def _start(g, what, requests, finish, result, async_op, nbytes):
    """Wrap the started MPI ``requests``: returned as a Work with ``async_op``, else waited for
    (torch returns None then)."""
    _count(what, nbytes)
    work = Work(what, g.timeout, [request.Test for request in requests], finish, result)
    if async_op:
        return work
    work.wait()
    return None


def _count(what, nbytes):
    calls, total = _stats.get(what, (0, 0))
    _stats[what] = (calls + 1, total + int(nbytes))


def comm_stats():
    """``{"all_reduce": {"calls": n, "bytes": b}, ...}`` since ``init_process_group`` or
    ``reset_comm_stats()``: the bytes each call put in from this rank (the payload)."""
    return {what: {"calls": calls, "bytes": nbytes} for what, (calls, nbytes) in _stats.items()}


def reset_comm_stats():
    _stats.clear()


# --------------------------------------------------------------------------------------------------
# Checks shared by the collectives (torch's words)
# --------------------------------------------------------------------------------------------------
def _check_single_tensor(param, param_name):
    if not isinstance(param, Tensor):
        raise TypeError(f"Invalid function argument. Expected parameter `{param_name}` of type Tensor but got "
                        f"{type(param)} instead.")


def _check_tensor_list(param, param_name):
    if not isinstance(param, list) or not all(isinstance(p, Tensor) for p in param):
        raise TypeError(f"Invalid function argument. Expected parameter `{param_name}` of type List[Tensor] but "
                        f"got {type(param)}" + (f" with elements of type {[type(p) for p in param]}"
                                                 if isinstance(param, list) else "") + " instead.")


def _same_dtype(*tensors):
    found = [t for item in tensors for t in (item if isinstance(item, list) else [item])]
    for t in found[1:]:
        if t.dtype != found[0].dtype:
            raise ValueError(f"Invalid usage of tensors with different dtypes: found {found[0].dtype} and "
                             f"{t.dtype}")


def _check_op(op, dtype, what):
    if not isinstance(op, ReduceOp):  # torch's options setter (pybind11) refuses it: a TypeError
        raise TypeError(f"{what}(): incompatible function arguments: op must be a ReduceOp, got {op!r}")
    if op in _BITWISE and not (dtype.kind in "iub"):
        raise RuntimeError(f"Cannot use ReduceOp.{op.name} with non-integral dtype")
    if op is ReduceOp.AVG and not dtypes.is_floating(dtype):
        raise RuntimeError(f"{what}: ReduceOp.AVG needs a floating-point tensor, got {dtype} "
                           "(an integer mean would be rounded: reduce with SUM and divide yourself)")


def _same_dtype_in_backend(output, input, what):
    """all_gather_into_tensor / reduce_scatter_tensor: torch does not check the dtypes in Python (no ValueError
    as the list forms'); gloo refuses a pair that differ, with a RuntimeError."""
    if output.dtype != input.dtype:
        raise RuntimeError(f"ProcessGroupGloo::{what}: invalid tensor type (expected {input.dtype}, got "
                           f"{output.dtype})")


def _contiguous(tensor, what):
    """gloo's point-to-point calls take contiguous tensors only (torch's words); its collectives copy."""
    if not tensor.is_contiguous():
        raise RuntimeError(f"{what}: input tensor has to be contiguous")


def _mpi_engine(g, what):
    if g.backend.name != "mpi":
        raise NotImplementedError(f"{what}: minilora's backend='{g.backend.name}' runs all_reduce, broadcast and "
                                  f"barrier only; {what} needs backend='mpi'")
    return g.backend


def _store(tensor, values):
    """Write ``values`` into ``tensor`` in place: host values in any dtype (cast, e.g. a float32 sum
    rounded to bfloat16 once), or the raw bytes (uint8) of ``tensor``'s dtype."""
    array = tensor._array
    if values.dtype == np.uint8 and array.dtype != np.uint8:
        values = values.view(array.dtype)
    array[...] = _to_like(values.reshape(array.shape).astype(array.dtype, copy=False), array)
    tensor._bump_version()  # an in-place change, as far as autograd's version checks go


# --------------------------------------------------------------------------------------------------
# The collectives
# --------------------------------------------------------------------------------------------------
def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """In place: every rank's ``tensor`` becomes the reduction (``op``) of all ranks' tensors.
    Returns None (a Work with ``async_op=True``)."""
    _check_single_tensor(tensor, "tensor")
    g = _resolve(group, "all_reduce")
    if g is None:
        return None
    _check_op(op, tensor._array.dtype, "all_reduce")
    array = tensor._array  # a non-contiguous one is copied and written back, as torch's gloo does
    buf = g.backend.reduction_buffer(array)
    requests = g.backend.all_reduce(buf, op, array.dtype)

    def finish():
        if op is ReduceOp.AVG:
            buf[...] = buf / g.size()
        _store(tensor, buf)
    return _start(g, "all_reduce", requests, finish, [tensor], async_op, array.nbytes)


def broadcast(tensor, src=None, group=None, async_op=False, group_src=None):
    """In place: every rank's ``tensor`` becomes rank ``src``'s."""
    _check_single_tensor(tensor, "tensor")
    g = _resolve(group, "broadcast")
    if g is None:
        return None
    root = _root(g, src, group_src, "broadcast", "src")
    array = tensor._array
    buf = g.backend.byte_buffer(array)
    requests = g.backend.broadcast(buf, root)
    return _start(g, "broadcast", requests, lambda: _store(tensor, buf), [tensor], async_op, array.nbytes)


def reduce(tensor, dst=None, op=ReduceOp.SUM, group=None, async_op=False, group_dst=None):
    """In place on rank ``dst`` only: its ``tensor`` becomes the reduction of every rank's (the
    others' tensors are left as they were)."""
    _check_single_tensor(tensor, "tensor")
    g = _resolve(group, "reduce")
    if g is None:
        return None
    root = _root(g, dst, group_dst, "reduce", "dst")
    _check_op(op, tensor._array.dtype, "reduce")
    array = tensor._array
    engine = _mpi_engine(g, "reduce")
    buf = engine.reduction_buffer(array)
    if buf is array and g.rank() != root:
        buf = buf.copy()  # MPI may use a non-root's send buffer as scratch: its tensor must stay

    def finish():
        if g.rank() == root:
            if op is ReduceOp.AVG:
                buf[...] = buf / g.size()
            _store(tensor, buf)
    return _start(g, "reduce", engine.reduce(buf, root, op, array.dtype), finish, [tensor], async_op, array.nbytes)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """``tensor_list[r]`` becomes rank r's ``tensor`` (every tensor the same shape and dtype)."""
    _check_tensor_list(tensor_list, "tensor_list")
    _check_single_tensor(tensor, "tensor")
    _same_dtype(tensor_list, tensor)
    g = _resolve(group, "all_gather")
    if g is None:
        return None
    engine = _mpi_engine(g, "all_gather")
    _check_outputs(tensor_list, tensor, g.size(), "all_gather", "output tensor list")
    send = engine.byte_buffer(tensor._array)
    recv = np.empty(send.size * g.size(), np.uint8)

    def finish():
        for out, piece in zip(tensor_list, recv.reshape(g.size(), -1)):
            _store(out, piece)
    return _start(g, "all_gather", engine.all_gather(send, recv), finish, tensor_list, async_op, send.size)


def _check_outputs(tensors, like, size, what, name):
    """One tensor per rank, each of ``like``'s shape (torch's gloo words)."""
    if len(tensors) != size:
        raise RuntimeError(f"{what}: invalid {name} (expected length {size}, got {len(tensors)})")
    for i, t in enumerate(tensors):
        if tuple(t.shape) != tuple(like.shape):
            raise RuntimeError(f"{what}: invalid tensor size at index {i} (expected {tuple(like.shape)}, got "
                               f"{tuple(t.shape)})")


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
    """``output_tensor`` becomes every rank's ``input_tensor`` in rank order: concatenated along
    dim 0, or stacked (shape ``(world_size, *input.shape)``) -- any shape with ``world_size`` times
    the elements."""
    _check_single_tensor(output_tensor, "output_tensor")
    _check_single_tensor(input_tensor, "input_tensor")
    _same_dtype_in_backend(output_tensor, input_tensor, "allgather")
    g = _resolve(group, "all_gather_into_tensor")
    if g is None:
        return None
    engine = _mpi_engine(g, "all_gather_into_tensor")
    if output_tensor.numel() != g.size() * input_tensor.numel():
        raise RuntimeError(f"all_gather_into_tensor: output tensor size must be equal to world_size ({g.size()}) "
                         f"times input tensor size: got {tuple(output_tensor.shape)} for an input of "
                         f"{tuple(input_tensor.shape)}")
    send = engine.byte_buffer(input_tensor._array)
    recv = np.empty(send.size * g.size(), np.uint8)
    return _start(g, "all_gather_into_tensor", engine.all_gather(send, recv), lambda: _store(output_tensor, recv),
                  [output_tensor], async_op, send.size)


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op=False):
    """``input`` (``world_size`` times ``output``'s elements, concatenated or stacked) is reduced over
    the ranks, and rank r's ``output`` becomes the r-th piece of the result."""
    _check_single_tensor(output, "output")
    _check_single_tensor(input, "input")
    _same_dtype_in_backend(output, input, "reduce_scatter")
    g = _resolve(group, "reduce_scatter_tensor")
    if g is None:
        return None
    if input.numel() != g.size() * output.numel():
        raise RuntimeError(f"reduce_scatter_tensor: input tensor must be the same size as output size times "
                         f"world size ({g.size()}): got {tuple(input.shape)} for an output of {tuple(output.shape)}")
    return _reduce_scatter(g, output, input._array, op, async_op, "reduce_scatter_tensor", whole=True)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op=False):
    """``input_list[r]`` is reduced over the ranks into rank r's ``output``."""
    _check_single_tensor(output, "output")
    _check_tensor_list(input_list, "input_list")
    _same_dtype(output, input_list)
    g = _resolve(group, "reduce_scatter")
    if g is None:
        return None
    _check_outputs(input_list, output, g.size(), "reduce_scatter", "input tensor list")
    stacked = np.stack([np.ascontiguousarray(_host(t._array)) for t in input_list])
    return _reduce_scatter(g, output, stacked, op, async_op, "reduce_scatter")


def _reduce_scatter(g, output, array, op, async_op, what, whole=False):
    engine = _mpi_engine(g, what)
    _check_op(op, output._array.dtype, what)
    send = engine.reduction_buffer(array).reshape(g.size(), -1)
    recv = np.empty(send.shape[1], send.dtype)

    def finish():
        if op is ReduceOp.AVG:
            recv[...] = recv / g.size()
        _store(output, recv)
    requests = engine.reduce_scatter(send, recv, op, output._array.dtype, whole)
    return _start(g, what, requests, finish, [output], async_op, array.nbytes)


def gather(tensor, gather_list=None, dst=None, group=None, async_op=False, group_dst=None):
    """On rank ``dst`` (0 by default), ``gather_list[r]`` becomes rank r's ``tensor``; the other
    ranks pass no ``gather_list``."""
    _check_single_tensor(tensor, "tensor")
    gather_list = _optional_list(gather_list, "gather_list")
    _same_dtype(tensor, gather_list)
    g = _resolve(group, "gather")
    if g is None:
        return None
    root = _root(g, 0 if dst is None and group_dst is None else dst, group_dst, "gather", "dst")
    _only_on_root(g.rank() == root, gather_list, "gather_list", "destination")
    engine = _mpi_engine(g, "gather")
    send = engine.byte_buffer(tensor._array)
    recv = None
    if g.rank() == root:
        _check_outputs(gather_list, tensor, g.size(), "gather", "output tensor list")
        recv = np.empty(send.size * g.size(), np.uint8)

    def finish():
        if recv is not None:
            for out, piece in zip(gather_list, recv.reshape(g.size(), -1)):
                _store(out, piece)
    return _start(g, "gather", engine.gather(send, recv, root), finish, gather_list, async_op, send.size)


def scatter(tensor, scatter_list=None, src=None, group=None, async_op=False, group_src=None):
    """Rank r's ``tensor`` becomes ``scatter_list[r]`` of rank ``src`` (0 by default); the other
    ranks pass no ``scatter_list``."""
    _check_single_tensor(tensor, "tensor")
    scatter_list = _optional_list(scatter_list, "scatter_list")
    _same_dtype(tensor, scatter_list)
    g = _resolve(group, "scatter")
    if g is None:
        return None
    root = _root(g, 0 if src is None and group_src is None else src, group_src, "scatter", "src")
    _only_on_root(g.rank() == root, scatter_list, "scatter_list", "source")
    engine = _mpi_engine(g, "scatter")
    recv = np.empty(tensor._array.nbytes, np.uint8)
    send = None
    if g.rank() == root:
        _check_outputs(scatter_list, tensor, g.size(), "scatter", "input tensor list")
        send = np.concatenate([engine.byte_buffer(t._array) for t in scatter_list])
    requests = engine.scatter(send, recv, root)
    return _start(g, "scatter", requests, lambda: _store(tensor, recv), [tensor], async_op,
                  0 if send is None else send.size)


def all_to_all_single(output, input, output_split_sizes=None, input_split_sizes=None, group=None, async_op=False):
    """Rank r sends the j-th slice (along dim 0) of ``input`` to rank j, and ``output`` becomes the
    slices the ranks sent it, in rank order. Equal slices unless ``*_split_sizes`` (rows per rank)."""
    _check_single_tensor(output, "output")
    _check_single_tensor(input, "input")
    _same_dtype(output, input)
    g = _resolve(group, "all_to_all_single")
    if g is None:
        return None
    engine = _mpi_engine(g, "all_to_all_single")
    send_rows = _split_rows(input, input_split_sizes, g.size(), "input")
    recv_rows = _split_rows(output, output_split_sizes, g.size(), "output")
    send = engine.byte_buffer(input._array)
    recv = np.empty(output._array.nbytes, np.uint8)
    row_bytes = [t._array.nbytes // max(t.shape[0], 1) if t.dim() else t._array.nbytes for t in (input, output)]
    requests = engine.all_to_all(send, [r * row_bytes[0] for r in send_rows], recv,
                                 [r * row_bytes[1] for r in recv_rows])
    return _start(g, "all_to_all_single", requests, lambda: _store(output, recv), [output], async_op, send.size)


def _split_rows(tensor, sizes, size, name):
    """Rows of ``tensor`` per rank: ``sizes``, or an equal share."""
    rows = tensor.shape[0] if tensor.dim() else 1
    if sizes is None or len(sizes) == 0:
        if rows % size:
            raise RuntimeError(f"all_to_all_single: the {name}'s first dimension ({rows}) must divide evenly among "
                             f"the {size} ranks (or give {name}_split_sizes)")
        return [rows // size] * size
    sizes = [int(n) for n in sizes]
    if len(sizes) != size or sum(sizes) != rows or min(sizes) < 0:
        raise RuntimeError(f"all_to_all_single: {name}_split_sizes={sizes} must have one entry per rank ({size}) "
                           f"adding up to the {name}'s first dimension ({rows})")
    return sizes


def all_to_all(output_tensor_list, input_tensor_list, group=None, async_op=False):
    """Rank r sends ``input_tensor_list[j]`` to rank j, which receives it in its
    ``output_tensor_list[r]`` (shapes may differ from pair to pair; each output must have its
    input's size)."""
    _check_tensor_list(output_tensor_list, "output_tensor_list")
    _check_tensor_list(input_tensor_list, "input_tensor_list")
    _same_dtype(output_tensor_list, input_tensor_list)
    g = _resolve(group, "all_to_all")
    if g is None:
        return None
    engine = _mpi_engine(g, "all_to_all")
    for name, tensors in (("output_tensor_list", output_tensor_list), ("input_tensor_list", input_tensor_list)):
        if len(tensors) != g.size():
            raise RuntimeError(f"all_to_all: {name} must have one tensor per rank ({g.size()}), got {len(tensors)}")
    pieces = [engine.byte_buffer(t._array) for t in input_tensor_list]
    send = np.concatenate(pieces) if pieces else np.empty(0, np.uint8)
    recv_counts = [t._array.nbytes for t in output_tensor_list]
    recv = np.empty(sum(recv_counts), np.uint8)

    def finish():
        for out, piece in zip(output_tensor_list, np.split(recv, np.cumsum(recv_counts)[:-1])):
            _store(out, piece)
    requests = engine.all_to_all(send, [p.size for p in pieces], recv, recv_counts)
    return _start(g, "all_to_all", requests, finish, output_tensor_list, async_op, send.size)


def _optional_list(tensors, name):
    if tensors:
        _check_tensor_list(tensors, name)
        return tensors
    return []


def _only_on_root(is_root, tensors, name, role):
    if is_root and not tensors:
        raise ValueError(f"Argument ``{name}`` must be specified on {role} rank.")
    if not is_root and tensors:
        raise ValueError(f"Argument ``{name}`` must NOT be specified on non-{role} ranks.")


def barrier(group=None, async_op=False, device_ids=None, timeout=None):
    """Wait until every rank of ``group`` has reached its ``barrier()``."""
    g = _resolve(group, "barrier")
    if g is None:
        return None
    work = _start(g, "barrier", g.backend.barrier(), lambda: None, [], True, 0)
    if timeout is not None:
        work._timeout = _seconds(timeout, g.timeout, "barrier")
    if async_op:
        return work
    work.wait()
    return None


def monitored_barrier(group=None, timeout=None, wait_all_ranks=False):
    """A barrier that names the ranks that did not come: rank 0 of the group waits up to ``timeout``
    for each of the others and raises ``RuntimeError`` naming the first missing one (every missing
    one with ``wait_all_ranks=True``), as torch's gloo backend."""
    g = _resolve(group, "monitored_barrier")
    if g is None:
        return None
    seconds = _seconds(timeout, g.timeout, "monitored_barrier")
    _count("monitored_barrier", 0)
    comm, token = g.monitor_comm, np.zeros(1, np.uint8)
    if g.rank() != 0:
        arrived, released = comm.Isend(token, dest=0, tag=1), comm.Irecv(np.zeros(1, np.uint8), source=0, tag=2)
        _wait(lambda: arrived.Test() and released.Test(), "monitored_barrier", seconds)
        return None
    arrivals = {r: comm.Irecv(np.zeros(1, np.uint8), source=r, tag=1) for r in range(1, g.size())}
    deadline = time.monotonic() + seconds
    missing = []
    for r, request in arrivals.items():
        try:
            _wait(request.Test, "monitored_barrier", max(deadline - time.monotonic(), 1e-9))
        except DistBackendError:
            missing.append(r)
            if not wait_all_ranks:
                break
    if missing:
        for request in arrivals.values():
            if not request.Test():
                request.Cancel()
        ms = int(round(seconds * 1000))
        if wait_all_ranks:
            raise RuntimeError(f"[Rank 0]: Ranks {', '.join(map(str, missing))} failed to pass monitoredBarrier "
                               f"in {ms} ms")
        raise RuntimeError(f"[Rank 0]: Rank {missing[0]} failed to pass monitoredBarrier in {ms} ms")
    releases = [comm.Isend(token, dest=r, tag=2) for r in range(1, g.size())]
    _wait(lambda: all(request.Test() for request in releases), "monitored_barrier", seconds)
    return None


# --------------------------------------------------------------------------------------------------
# Point to point
# --------------------------------------------------------------------------------------------------
def isend(tensor, dst=None, group=None, tag=0, group_dst=None):
    """Start sending ``tensor`` to rank ``dst``; the Work's ``wait()`` returns once it is sent."""
    _check_single_tensor(tensor, "tensor")
    _contiguous(tensor, "isend")
    g = _resolve(group, "isend")
    if g is None:
        return None
    peer = _peer(g, dst, group_dst, "isend", "destination")
    buf = _mpi_engine(g, "isend").byte_buffer(tensor._array)
    request = g.backend.send(buf, peer, int(tag))
    _count("send", buf.size)
    return Work("send", g.timeout, [request.Test], lambda: None, [tensor])


def irecv(tensor, src=None, group=None, tag=0, group_src=None):
    """Start receiving into ``tensor`` from rank ``src`` (any rank when None); after ``wait()``,
    ``work.source_rank()`` is the sender's global rank."""
    _check_single_tensor(tensor, "tensor")
    _contiguous(tensor, "irecv")
    g = _resolve(group, "irecv")
    if g is None:
        return None
    peer = None if src is None and group_src is None else _peer(g, src, group_src, "irecv", "source")
    buf = np.empty(tensor._array.nbytes, np.uint8)
    request, status = _mpi_engine(g, "irecv").recv(buf, peer, int(tag))
    _count("recv", 0)
    work = Work("recv", g.timeout, [lambda: request.Test(status)], lambda: _store(tensor, buf), [tensor])
    work._source = lambda: g.ranks[status.Get_source()]
    return work


def send(tensor, dst=None, group=None, tag=0, group_dst=None):
    """Send ``tensor`` to rank ``dst`` and wait until it is sent."""
    work = isend(tensor, dst, group, tag, group_dst)
    if work is not None:
        work.wait()


def recv(tensor, src=None, group=None, tag=0, group_src=None):
    """Receive into ``tensor`` from rank ``src`` (any rank when None); returns the sender's global
    rank (-1 outside ``group``)."""
    work = irecv(tensor, src, group, tag, group_src)
    if work is None:
        return -1
    work.wait()
    return work.source_rank()


def _peer(g, global_rank, group_rank, what, role):
    peer = _root(g, global_rank, group_rank, what, "the peer")
    if peer == g.rank():
        raise ValueError(f"Invalid {role} rank: {role} rank should not be the same as the rank of the current "
                         "process.")
    return peer


class P2POp:
    """One send or receive of ``batch_isend_irecv``: ``op`` is ``isend`` or ``irecv``."""

    def __init__(self, op, tensor, peer=None, group=None, tag=0, group_peer=None):
        if op not in (isend, irecv):
            raise ValueError("Invalid ``op``. Expected ``op`` to be of type ``minilora.distributed.isend`` or "
                             "``minilora.distributed.irecv``.")
        _check_single_tensor(tensor, "tensor")
        self.op, self.tensor, self.peer, self.group, self.tag, self.group_peer = op, tensor, peer, group, tag, group_peer


def batch_isend_irecv(p2p_op_list):
    """Start every send and receive of the list at once; one Work each, in the list's order."""
    if not isinstance(p2p_op_list, list) or not all(isinstance(p, P2POp) for p in p2p_op_list):
        raise ValueError("Invalid ``p2p_op_list``. Each op is expected to to be of type "
                         "``minilora.distributed.P2POp``.")
    return [p.op(p.tensor, p.peer, p.group, p.tag, p.group_peer) for p in p2p_op_list]


# --------------------------------------------------------------------------------------------------
# Python objects: pickled, then moved as bytes
# --------------------------------------------------------------------------------------------------
def _pickled(obj):
    return np.frombuffer(pickle.dumps(obj), np.uint8)


def _now(g, what, requests):
    Work(what, g.timeout, [request.Test for request in requests], lambda: None).wait()


def _gather_bytes(g, what, payload, root=None):
    """Every rank's ``payload`` (a uint8 array) as a list, on every rank (``root=None``) or on
    ``root`` only (None elsewhere): sizes first, then the bytes in one variable-size gather."""
    engine = _mpi_engine(g, what)
    sizes = np.empty(g.size(), np.int64)
    mine = np.array([payload.size], np.int64)
    everywhere = root is None
    _now(g, what, engine.all_gather(mine, sizes) if everywhere else engine.gather(mine, sizes, root))
    receives = everywhere or g.rank() == root
    recv = np.empty(int(sizes.sum()), np.uint8) if receives else None
    counts = sizes.tolist() if receives else None
    _now(g, what, engine.all_gather(payload, recv, counts) if everywhere else
         engine.gather(payload, recv, root, counts))
    _count(what, payload.size)
    if not receives:
        return None
    return np.split(recv, np.cumsum(sizes)[:-1])


def all_gather_object(object_list, obj, group=None):
    """``object_list[r]`` becomes rank r's ``obj`` (any picklable object), on every rank."""
    g = _resolve(group, "all_gather_object")
    if g is None:
        return None
    for r, data in enumerate(_gather_bytes(g, "all_gather_object", _pickled(obj))):
        object_list[r] = pickle.loads(data.tobytes())
    return None


def gather_object(obj, object_gather_list=None, dst=None, group=None, group_dst=None):
    """On rank ``dst`` (0 by default), ``object_gather_list[r]`` becomes rank r's ``obj``."""
    g = _resolve(group, "gather_object")
    if g is None:
        return None
    root = _root(g, 0 if dst is None and group_dst is None else dst, group_dst, "gather_object", "dst")
    if g.rank() == root and object_gather_list is None:
        raise AssertionError("Must provide object_gather_list on dst rank")
    gathered = _gather_bytes(g, "gather_object", _pickled(obj), root)
    for r, data in enumerate(gathered or []):
        object_gather_list[r] = pickle.loads(data.tobytes())
    return None


def broadcast_object_list(object_list, src=None, group=None, device=None, group_src=None):
    """In place: every rank's ``object_list`` becomes rank ``src``'s (0 by default; the lists have
    the same length everywhere)."""
    g = _resolve(group, "broadcast_object_list")
    if g is None:
        return None
    root = _root(g, 0 if src is None and group_src is None else src, group_src, "broadcast_object_list", "src")
    engine = _mpi_engine(g, "broadcast_object_list")
    pieces = [_pickled(obj) for obj in object_list] if g.rank() == root else []
    sizes = np.array([p.size for p in pieces] if pieces else [0] * len(object_list), np.int64)
    _now(g, "broadcast_object_list", engine.broadcast(sizes, root))
    data = np.concatenate(pieces) if pieces else np.empty(int(sizes.sum()), np.uint8)
    _now(g, "broadcast_object_list", engine.broadcast(data, root))
    _count("broadcast_object_list", data.size if g.rank() == root else 0)
    if g.rank() != root:
        for i, piece in enumerate(np.split(data, np.cumsum(sizes)[:-1])):
            object_list[i] = pickle.loads(piece.tobytes())
    return None


def send_object_list(object_list, dst=None, group=None, device=None, group_dst=None, use_batch=False):
    """Send the pickled objects of ``object_list`` to rank ``dst``, which takes them with ``recv_object_list``:
    their sizes, then their bytes, as torch's two messages."""
    g = _resolve(group, "send_object_list")
    if g is None:
        return None
    peer = _peer(g, dst, group_dst, "send_object_list", "destination")
    engine = _mpi_engine(g, "send_object_list")
    pieces = [_pickled(obj) for obj in object_list]
    sizes = np.array([p.size for p in pieces], np.int64)
    data = np.concatenate(pieces) if pieces else np.empty(0, np.uint8)
    _now(g, "send_object_list", [engine.send(sizes.view(np.uint8), peer, 0), engine.send(data, peer, 0)])
    _count("send_object_list", data.size)
    return None


def recv_object_list(object_list, src=None, group=None, device=None, group_src=None, use_batch=False):
    """In place: ``object_list`` (as long as the sender's) becomes the objects rank ``src`` (any rank when None)
    sent with ``send_object_list``; returns the sender's global rank (-1 outside ``group``)."""
    g = _resolve(group, "recv_object_list")
    if g is None:
        return -1
    peer = None if src is None and group_src is None else _peer(g, src, group_src, "recv_object_list", "source")
    engine = _mpi_engine(g, "recv_object_list")
    sizes = np.empty(len(object_list), np.int64)
    request, status = engine.recv(sizes.view(np.uint8), peer, 0)
    Work("recv_object_list", g.timeout, [lambda: request.Test(status)], lambda: None).wait()
    sender = status.Get_source()  # the objects come from the rank that sent the sizes
    data = np.empty(int(sizes.sum()), np.uint8)
    request, status = engine.recv(data, sender, 0)
    Work("recv_object_list", g.timeout, [lambda: request.Test(status)], lambda: None).wait()
    for i, piece in enumerate(np.split(data, np.cumsum(sizes)[:-1])):
        object_list[i] = pickle.loads(piece.tobytes())
    return g.ranks[sender]


def scatter_object_list(scatter_object_output_list, scatter_object_input_list=None, src=None, group=None,
                        group_src=None):
    """``scatter_object_output_list[0]`` becomes ``scatter_object_input_list[r]`` of rank ``src``
    (0 by default) on rank r."""
    g = _resolve(group, "scatter_object_list")
    if g is None:
        return None
    if not isinstance(scatter_object_output_list, list) or len(scatter_object_output_list) < 1:
        raise ValueError("Expected argument scatter_object_output_list to be a list of size at least 1.")
    root = _root(g, 0 if src is None and group_src is None else src, group_src, "scatter_object_list", "src")
    is_root = g.rank() == root
    if is_root and scatter_object_input_list is None:
        raise ValueError("source rank must provide non-None scatter_object_input_list")
    engine = _mpi_engine(g, "scatter_object_list")
    pieces = [_pickled(obj) for obj in scatter_object_input_list[:g.size()]] if is_root else None
    sizes = np.array([p.size for p in pieces], np.int64) if is_root else None
    mine = np.empty(1, np.int64)
    _now(g, "scatter_object_list", engine.scatter(sizes, mine, root))
    data = np.empty(int(mine[0]), np.uint8)
    _now(g, "scatter_object_list", engine.scatter(np.concatenate(pieces) if is_root else None, data, root,
                                                   sizes.tolist() if is_root else None))
    _count("scatter_object_list", int(sizes.sum()) if is_root else 0)
    scatter_object_output_list[0] = pickle.loads(data.tobytes())
    return None


def local_world_size():
    """How many ranks of the group run on this machine (they share its cores)."""
    from mpi4py import MPI
    return _require_group("local_world_size").comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()


def abort(exit_code=1):
    """End every rank of the job now (MPI_Abort): what a rank that failed does so the others do not
    wait for it until their timeout."""
    from mpi4py import MPI
    MPI.COMM_WORLD.Abort(exit_code)
