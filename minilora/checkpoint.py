"""Reading and writing weights in the safetensors format, the one Hugging Face checkpoints use.

A ``.safetensors`` file is deliberately simple (and, unlike pickle, cannot run code when loaded)::

    8 bytes   N, the header length (little-endian unsigned 64-bit integer)
    N bytes   a JSON header: {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, ...,
              "__metadata__": {"format": "pt"}}
    the rest  the raw tensor bytes, each tensor at its [begin, end) offsets

The ``safetensors`` package does the reading and writing (its NumPy API). Before handing a file to it
we check the header ourselves, so a truncated download or a corrupted file gives an error that names
the file and says what is wrong, instead of a bare "MetadataIncompleteBuffer". The header also lets us
read what the safetensors package's NumPy API cannot: bfloat16 tensors (most released Llama weights)
come back as bfloat16 arrays (``minilora.bfloat16``, from ml_dtypes), or, without ml_dtypes, as float32.

Large checkpoints come in shards: ``model.safetensors.index.json`` maps each tensor name to the shard
file holding it. ``load_checkpoint(directory)`` reads either layout.

Every write is atomic. One file (``atomic_write``): the bytes go to a temporary file in the same
folder, which then replaces the target in one ``os.replace``. A folder of files that belong together
(``atomic_folder``: a model's config.json + weights, an adapter's two files) is written into a
temporary sibling folder that is then swapped in as one unit, so a crash or a full disk mid-save leaves
the old model or the new one, never the new config beside the old weights. Leftovers of a killed save
are removed by the next save into the same place (``remove_leftovers``).
"""
import contextlib
import ctypes
import errno
import fnmatch
import hashlib
import json
import os
import shutil
import stat
import struct
import sys
import tempfile
import threading
import time

import numpy as np

from .dtypes import HAS_BFLOAT16, bfloat16_if_installed, is_bfloat16, is_floating
from .interrupts import held_ctrl_c
from .native import pid_alive as _pid_alive
from . import torch_format

__all__ = ["CheckpointError", "InvalidJSONError", "MissingShardError", "FolderInUseError", "atomic_write",
           "atomic_folder", "make_save_folder", "one_version_of", "writing_alone", "remove_leftovers", "put_back_a_cut_swap", "save_json", "load_json", "naming_the_file", "other_format", "binary_file_kind",
           "read_header", "save_file", "load_file", "load_checkpoint", "read_checkpoint_shapes",
           "checkpoint_files", "non_finite_names", "warn_non_finite", "SAFE_WEIGHTS_NAME",
           "SAFE_WEIGHTS_INDEX_NAME", "WEIGHTS_NAME", "WEIGHTS_INDEX_NAME", "load_weights", "read_weights_header"]

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"  # torch.save's state dict: read when a folder has no safetensors, as transformers
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"

# safetensors dtype names -> NumPy dtypes. BF16 is ml_dtypes' bfloat16 when that is installed (looked up
# only when a BF16 tensor is read or written: importing ml_dtypes costs ~0.7 s); without it NumPy has
# no such dtype, and BF16 tensors are read as uint16 and widened to float32.
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
           "U64": np.uint64, "I32": np.int32, "U32": np.uint32, "I16": np.int16, "U16": np.uint16,
           "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_ITEMSIZE = {name: np.dtype(dt).itemsize for name, dt in _DTYPES.items()} | {"BF16": 2}
_CODES = {np.dtype(dt): name for name, dt in _DTYPES.items()}


def _code(dtype):
    """The safetensors name of the NumPy ``dtype`` ("BF16" for ml_dtypes' bfloat16), or None if it has none."""
    return "BF16" if is_bfloat16(dtype) else _CODES.get(dtype)


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or holds something we cannot read."""


class InvalidJSONError(CheckpointError, OSError):
    """A JSON file (config.json, an index, an adapter config) that does not parse: an OSError too, as
    transformers' "It looks like the config file at ... is not a valid JSON file"."""


class MissingShardError(CheckpointError, FileNotFoundError):
    """A shard named in ``model.safetensors.index.json`` is not there: a FileNotFoundError, as transformers
    raises for it."""


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------
def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """``with atomic_write(path) as f: f.write(...)`` -- ``path`` changes only if the block finishes.

    The data goes to a temporary file next to ``path`` (same filesystem, so the rename is atomic),
    is flushed to disk, and then ``os.replace`` swaps it in. On any error the temporary file is
    removed and the old ``path`` is left as it was.
    """
    path = _through_link(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path}: it is a folder, not a file")
    _refuse_a_protected_file(path)
    folder = os.path.dirname(os.path.abspath(path))
    _make_folder(folder, path)
    with _kept_in_place(folder):  # (no save swaps the folder meanwhile: the file would go with its old version)
        remove_leftovers(path)
        with _naming_the_target(path):
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(path), suffix=".tmp")
        try:
            encoding = {} if "b" in mode else {"encoding": "utf-8"}
            with _writing(tmp), _naming_the_target(path, tmp), os.fdopen(fd, mode, **encoding) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
                # mkstemp makes 0600 files: give the old file's permissions (open(path, "w") keeps them), or the usual
                os.chmod(tmp, _permissions(path, 0o666 & ~_UMASK))
                os.replace(tmp, path)
            _fsync_dir(folder)  # the rename itself reaches the disk
        except BaseException:
            with held_ctrl_c(), contextlib.suppress(FileNotFoundError):  # (a Ctrl-C here left the file behind)
                os.remove(tmp)
            raise


def _refuse_a_protected_file(path):
    """A file the user may not write (``chmod a-w model.pt``: kept from being overwritten) is refused in the words of
    ``open(path, "wb")``, which torch.save and transformers' save_pretrained call: the rename that replaces a file
    needs only its folder's permission, so a save overwrote what the user had protected."""
    if os.path.isfile(path) and not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)


def _refuse_protected_files(directory, new):
    """``_refuse_a_protected_file`` for each file of the old ``directory`` that a file of the new folder ``new``
    replaces, and for the folder itself where it may not be written (where transformers' save cannot create a file):
    checked before anything is replaced."""
    if not os.path.isdir(directory):
        return
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), directory)
    for root, _dirs, files in os.walk(new):
        for name in files:
            _refuse_a_protected_file(os.path.join(directory, os.path.relpath(os.path.join(root, name), new)))


@contextlib.contextmanager
def _naming_the_target(path, tmp=None, temporary=None):
    """An OSError of a save (a full disk, a read-only or forbidden folder) names the file or folder the user
    saves to -- the system's own error names the temporary one (".model.minilora-1234-x8a2.tmp") or none
    at all (ENOSPC from a write) -- and says that what was there is unchanged. Type and errno are kept
    (``OSError(errno, ...)`` is the errno's subclass: PermissionError for EACCES)."""
    try:
        yield
    except OSError as exc:
        where = None if exc.errno is None or isinstance(exc, CheckpointError) else \
            _target_of(exc.filename, path, tmp, temporary)
        if where is None:  # (another file's error: the block's own to name)
            raise
        strerror = exc.strerror or os.strerror(exc.errno)
        text = strerror if strerror.endswith(_UNCHANGED) else strerror + _UNCHANGED
        raise OSError(exc.errno, text, where) from exc


_UNCHANGED = "; the save was abandoned and what was there before is unchanged"


def _target_of(filename, path, tmp, temporary=None):
    """The user's path that an error's file stands for: ``path`` for none (a write), ``path`` itself or a
    temporary name of its save (starting with ``temporary``: beside ``path`` unless said); the same place in
    ``path`` for a file inside the temporary folder ``tmp``; None for any other file."""
    path = os.path.abspath(path)
    if filename is None:
        return path
    filename = os.path.abspath(os.fspath(filename))
    if tmp is not None and filename.startswith(tmp + os.sep):
        return os.path.join(path, os.path.relpath(filename, tmp))
    temporary = temporary or os.path.join(os.path.dirname(path), _temp_prefix(path))
    return path if filename == path or filename.startswith(temporary) else None


# Temporary names carry the writer's process id (".model.minilora-1234-x8a2.tmp"), so a later save can
# tell the leftovers of a killed process (remove them) from the work of a live one (leave it alone).
_TEMP_MARK = ".minilora-"


def _temp_prefix(path):
    return f".{_temp_stem(os.path.basename(os.path.abspath(path)))}{_TEMP_MARK}{os.getpid()}-"


# A temporary name (or a lock file's) is the target's with up to ~40 bytes around it, and the system refuses a name
# past NAME_MAX (255 bytes on Linux's filesystems): a save to a long name that ``open`` takes (``torch.save(sd,
# "x" * 250 + ".pt")`` writes it) was refused for its temporary file's name. Such a name is cut, and a digest of
# the whole keeps two long names that share their beginning apart.
_LONGEST_NAME_KEPT = 160


def _temp_stem(name):
    """``name`` as temporary and lock names spell it: itself, or where long its start and a digest of the whole."""
    raw = os.fsencode(name)
    if len(raw) <= _LONGEST_NAME_KEPT:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return os.fsdecode(raw[:_LONGEST_NAME_KEPT - len(digest) - 1]) + "~" + digest


# The temporary names (without ".tmp"/".old") of the saves this process is writing now. A leftover named
# with this process's id but not among them was left by another process that had the same id: the one a
# restarted container ran before (its first python process gets the same small id every time), killed mid-save.
_WRITING = set()


def _in_progress(pid, leftover):
    """Whether the temporary ``leftover`` (its path without the suffix) belongs to a save still being written."""
    return leftover in _WRITING if pid == os.getpid() else _pid_alive(pid)


@contextlib.contextmanager
def _writing(tmp):
    stem = os.path.abspath(tmp)[:-len(".tmp")]
    _WRITING.add(stem)
    try:
        yield
    finally:
        _WRITING.discard(stem)


class FolderInUseError(BlockingIOError):
    """Another process is writing a run into this folder (``writing_alone``)."""


_WRITING_ALONE = {}  # folder -> [its locked descriptor (None: the filesystem has no locks), blocks inside]


@contextlib.contextmanager
def writing_alone(folder, what):
    """``with writing_alone(out_dir, "minilora.train"): <write a run there>`` -- refuses (``FolderInUseError``,
    naming the folder) while another process is in such a block for the same folder: two runs writing one folder
    mixed their checkpoints and metrics lines, and a resume continued the other run. An advisory lock on the folder
    (``flock``: released when this process ends, however), so nothing is written for it; taken again in this
    process, it is the same lock. A folder this made is removed again if the block left it empty."""
    folder = os.path.realpath(os.fspath(folder))
    held = _WRITING_ALONE.get(folder)
    if held is not None:
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    created = False
    if not os.path.exists(folder):
        try:
            os.makedirs(folder)
            created = True
        except OSError:  # (a file on the way, a folder not to be written: the run's own writes name it)
            pass
    descriptor = _locked_folder(folder, what)
    _WRITING_ALONE[folder] = [descriptor, 1]
    try:
        yield
    finally:
        del _WRITING_ALONE[folder]
        if descriptor is not None:
            os.close(descriptor)  # (the lock goes with it)
        if created:
            with contextlib.suppress(OSError):  # (not empty: the run's files are there)
                os.rmdir(folder)


def _locked_folder(folder, what):
    """A descriptor of ``folder`` holding its exclusive lock, or None where there is no lock to take (no
    ``fcntl``, not a folder: the caller's checks name it, a filesystem without locks)."""
    try:
        import fcntl
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (ImportError, OSError):
        return None
    try:
        _flock_now_or_soon(descriptor, fcntl.LOCK_EX)
    except BlockingIOError:
        os.close(descriptor)
        raise FolderInUseError(errno.EWOULDBLOCK, f"another process is writing to {folder} (another {what}?): wait "
                               "for it to end, or write this run to another folder", folder) from None
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def _flock_now_or_soon(descriptor, operation, attempts=3, pause=0.05):
    """``flock`` without blocking, tried again twice a moment later: a save asks whether a run holds a folder by
    taking its lock for an instant (``_held_by_a_run``), which a run starting just then must not take for a run."""
    import fcntl
    for attempt in range(attempts):
        try:
            return fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            if attempt == attempts - 1:
                raise
            time.sleep(pause)


def _held_by_a_run(directory):
    """Whether a run writes into ``directory`` now (``writing_alone``, in this process or another). Such a folder
    is never swapped for a new one: the run's later files would go into the new folder, its lock would stay on the
    old one (so a second run would no longer be refused), and a checkpoint it swapped in meanwhile would be lost."""
    if os.path.realpath(directory) in _WRITING_ALONE:
        return True
    try:
        import fcntl
        descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (ImportError, OSError):
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)  # (released with the descriptor)
        return False
    except BlockingIOError:
        return True
    except OSError:  # (a filesystem without locks: no run could hold it either)
        return False
    finally:
        os.close(descriptor)


def remove_leftovers(path):
    """Delete the temporary files/folders that a killed save of ``path`` left beside it.

    Also finishes a folder swap that was cut between its two renames (only on filesystems without an
    atomic exchange): if ``path`` is missing but its previous version was set aside, it comes back."""
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    if not os.path.isdir(parent):
        return
    prefix = f".{_temp_stem(name)}{_TEMP_MARK}"
    for entry in sorted(os.listdir(parent)):
        if entry == f".{_temp_stem(name)}{_LOCK_MARK}":
            _remove_if_unheld(os.path.join(parent, entry))
        if not entry.startswith(prefix) or not entry.endswith((".tmp", ".old")):
            continue
        pid = entry[len(prefix):].split("-", 1)[0]
        leftover = os.path.join(parent, entry)
        if pid.isdigit() and _in_progress(int(pid), leftover.rsplit(".", 1)[0]):
            continue  # a save in progress in another process (or in this one)
        if entry.endswith(".old") and not os.path.exists(path):
            os.rename(leftover, path)  # the old version, set aside by a swap that never finished
        elif os.path.isdir(leftover) and not os.path.islink(leftover):
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)


def put_back_a_cut_swap(path):
    """A reader's half of ``remove_leftovers``: a folder that is missing because a save was killed between its
    swap's two renames (a filesystem without an atomic exchange) comes back from the ``.old`` beside it, the
    previous version, whole. Before, a load found no such folder until the next save put it back. Nothing else
    is touched; a save still in progress, or a folder that cannot be written, is left as it is."""
    path = os.path.abspath(os.fspath(path))
    for candidate in (path, os.path.dirname(path)):  # (the folder, or a file's folder: model/config.json)
        if os.path.exists(candidate):
            return
        parent, name = os.path.split(candidate)
        prefix = f".{_temp_stem(name)}{_TEMP_MARK}"
        try:
            entries = sorted(os.listdir(parent))
        except OSError:
            continue
        for entry in entries:
            pid = entry[len(prefix):].split("-", 1)[0]
            if not (entry.startswith(prefix) and entry.endswith(".old") and pid.isdigit()):
                continue
            leftover = os.path.join(parent, entry)
            if not _in_progress(int(pid), leftover.rsplit(".", 1)[0]):
                with contextlib.suppress(OSError):
                    os.rename(leftover, candidate)
                return


def _through_link(path):
    """The file a symbolic link points to, as ``open(path, "w")`` writes there: replacing the link by a
    regular file would leave the file the user keeps behind it unchanged (and the link gone)."""
    return os.path.realpath(path) if os.path.islink(path) else path


def make_save_folder(directory):
    """``os.makedirs(directory, exist_ok=True)`` as a ``save_pretrained`` starts, through a symbolic link: a link
    whose folder is not there yet (a link to another disk's folder, made before the first save) gets that folder,
    where ``makedirs`` said "File exists" of a path that did not exist (transformers' and PEFT's words); the link
    stays, as ``atomic_folder`` keeps it."""
    os.makedirs(_through_link(os.fspath(directory)), exist_ok=True)


def _make_folder(folder, path):
    """Create the folder ``path`` goes into; a file where a folder must be is named (not a bare errno)."""
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = folder
        while blocking and not os.path.exists(blocking):
            blocking = os.path.dirname(blocking)
        raise NotADirectoryError(f"cannot save {path}: {blocking} is a file, not a folder") from None


def _permissions(path, default):
    """The permission bits of ``path`` if it exists (a save keeps a private 0600 file private), else ``default``."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return default


def _fsync_dir(folder):
    """Make a folder's entries (new names, renames) durable, where the OS allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_folder(directory, replaces=(), links_only=False):
    """``with atomic_folder(d) as tmp: <write files into tmp>`` -- ``d`` then holds them, as one unit.

    The files go to a temporary sibling folder; when the block finishes, files of the old ``d`` that
    the new save did not write are hard-linked in (a tokenizer.json, another adapter's subfolder),
    except those matching a glob in ``replaces`` (the old version's own files, e.g. its weight
    shards), everything is fsynced, and the two folders are swapped. A reader sees the old folder or
    the new one, never a mix; on an error (a full disk, a kill) the old folder is untouched and the
    temporary one is removed (now, or by the next save if the process was killed). A folder that cannot be
    swapped (a mount point, a parent this process cannot write) or that a run is writing (``writing_alone``) has its
    files replaced one by one instead, each whole (``_files_replaced_one_by_one``). The link-and-swap step holds the
    folder's lock (``_publishing``): a second save at once waits, then links in the first one's files.
    ``links_only``: where the old folder's other files cannot be hard-linked (a filesystem without hard links), they
    are not copied either (a run's output folder holds every checkpoint: a full copy of the run per save); the new
    files replace their old versions one by one there.
    """
    directory = os.path.abspath(os.fspath(directory))
    if _is_staging(directory):  # another save's temporary folder (a checkpoint's, Trainer.save_model's): that
        yield directory  # save publishes the whole, so the files go straight in (no second copy of them)
        return
    if os.path.islink(directory):  # save into the folder the link points to; the link stays
        directory = os.path.realpath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"cannot save into {directory}: it is a file, not a folder")
    parent = os.path.dirname(directory)
    _make_folder(parent, directory)
    with _kept_in_place(parent):  # (the temporary folder goes there; a swap of a folder around it would take it)
        with _swapped_in_whole(directory, parent, replaces, links_only) as tmp:
            yield tmp


@contextlib.contextmanager
def _swapped_in_whole(directory, parent, replaces, links_only=False):
    """``atomic_folder``'s save of ``directory`` (a folder, or none yet) into a temporary sibling swapped in whole."""
    if _cannot_swap(directory, parent):
        with _files_replaced_one_by_one(directory, replaces) as tmp:
            yield tmp
        return
    remove_leftovers(directory)
    with _naming_the_target(directory):
        tmp = tempfile.mkdtemp(dir=parent, prefix=_temp_prefix(directory), suffix=".tmp")
    try:
        with _writing(tmp), _naming_the_target(directory, tmp):
            yield tmp
            _fsync_tree(tmp)  # (the new files reach the disk before the lock: it is held for the swap alone)
            with _publishing(directory):
                _refuse_protected_files(directory, tmp)
                own = set(os.listdir(tmp))
                if os.path.isdir(directory) and not _link_missing(directory, tmp, replaces, copies=not links_only):
                    _unlinked(tmp, own)  # (no hard links here: the save's own files go in one by one)
                    _replace_each(tmp, directory, replaces)
                    return
                os.chmod(tmp, _permissions(directory, 0o777 & ~_UMASK))  # mkdtemp makes 0700 folders
                _fsync_tree(tmp)  # (the links)
                _swap_in(tmp, directory)
    finally:
        if os.path.isdir(tmp):  # the new files after an error, or the old folder after the swap
            _remove_tree(tmp)


def _is_staging(directory):
    """Whether ``directory`` is the temporary folder of a save this process is writing now."""
    return directory.endswith(".tmp") and directory[:-len(".tmp")] in _WRITING


def _is_temporary(entry):
    """A save's temporary file or folder (a killed one's leftover) or lock file: never carried into the new version."""
    return _TEMP_MARK in entry and entry.endswith((".tmp", ".old", _LOCK_MARK))


# Two saves into one folder at once (a model's save_pretrained and a tokenizer's, from two processes) each link the
# old folder's files they did not write beside their own, then swap: the later swap brought back the old version of
# what the earlier one had just saved, silently. The link-and-swap step of a folder is done by one save at a time:
# it holds ``flock`` on a lock file beside the folder (inside it where its parent cannot be written: then no save
# swaps it), so the second save links in the first one's files. The lock is a file of its own, never the folder:
# a run holds its output folder's lock for hours (``writing_alone``) and saves into it meanwhile. huggingface_hub
# locks its downloads the same way (``.lock`` files, through the filelock package); transformers and PEFT write
# into the folder itself, unlocked.
_LOCK_MARK = ".minilora-lock"


def _lock_path(directory):
    parent, name = os.path.split(directory)
    if os.access(parent, os.W_OK | os.X_OK):
        return os.path.join(parent, f".{_temp_stem(name)}{_LOCK_MARK}")
    return os.path.join(directory, f".{_IN_PLACE}{_LOCK_MARK}")


@contextlib.contextmanager
def _publishing(directory):
    """Hold the lock of ``directory``'s link-and-swap step (waiting for another save's to end). The lock file is
    removed while still held, so none is left beside the folder; a waiter that then gets the lock of the removed
    file takes the next one instead (``_locked_file``)."""
    path = _lock_path(directory)
    mine = _held_here().get(path)
    if mine is not None:  # (this thread reads the folder, or saves inside it, and swaps it now: waiting for its own
        with _made_exclusive(mine[0]):  # shared lock would never end; that lock becomes exclusive for the swap)
            yield
        return
    descriptor = _locked_file(path)
    try:
        yield
    finally:
        if descriptor is not None:
            try:
                os.remove(path)
            except OSError:  # (left: the next save takes it, and removes it)
                pass
            finally:  # (whatever stops the removal, a Ctrl-C included, the lock goes; unlocked, not only closed:
                _unlock(descriptor)  # a process forked meanwhile, a DataLoader worker, holds a copy of it)


@contextlib.contextmanager
def _made_exclusive(descriptor):
    """The shared lock held on ``descriptor`` made exclusive for the block (waiting for the other holders), then
    shared again."""
    import fcntl
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_SH)


def _unlock(descriptor):
    import fcntl
    try:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _remove_if_unheld(path):
    """Remove the lock file a save killed while it held it left (no process holds it now), as that save would have;
    one a save holds is left to it."""
    try:
        import fcntl
        descriptor = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.samestat(os.fstat(descriptor), os.stat(path)):
            os.remove(path)
    except OSError:  # (held: a save is swapping now; or removed meanwhile)
        pass
    finally:
        os.close(descriptor)


# A save writes inside folders that another save may swap: ``save_pretrained("out/adapter")`` puts its temporary
# folder in ``out`` and swaps ``out/adapter``, while ``save_pretrained("out")`` in another process links the old
# ``out``'s files (the old adapter among them) beside its own and swaps ``out``. Unordered, the adapter just saved
# was replaced by the old one, or its temporary folder went away with the old ``out`` mid-save. So a save holds,
# from its start to its end, the shared lock of every folder it writes inside (``_enclosing_folders``: the lock a
# swap of that folder holds exclusively, ``_publishing``): a swap of ``out`` waits for the saves inside it, and a
# save inside waits for a swap under way. Locks are taken outermost first (a swap holds its enclosing folders'
# too), so two saves never wait for each other in a circle.
def _enclosing_folders(folder):
    """``folder`` and the folders around it that a save could swap, outermost first: up to the first whose parent
    this process cannot write (no save of it can swap it, so none needs ordering: ``_cannot_swap``) or a mount
    point's; never a top-level folder (/tmp, /home: no save swaps one, and its lock file would go in /).
    A save's own temporary folder is no folder to order (nobody else swaps it)."""
    folders = []
    folder = os.path.realpath(folder)
    while True:
        parent = os.path.dirname(folder)
        if os.path.dirname(parent) == parent or os.path.ismount(folder) or not os.access(parent, os.W_OK | os.X_OK):
            return folders[::-1]
        if not _is_staging(folder):
            folders.append(folder)
        folder = parent


@contextlib.contextmanager
def _kept_in_place(folder):
    """Hold the shared lock of ``folder`` and of each folder around it (``_enclosing_folders``) for the block: no
    other save swaps one of them meanwhile. Each lock file is removed afterwards unless another save holds it. A
    lock this thread holds already is held once more (``_held_here``), never taken on a second descriptor."""
    held, taken = _held_here(), []
    try:
        for enclosing in _enclosing_folders(folder):
            path = _lock_path(enclosing)
            if path not in held:
                descriptor = _locked_file(path, shared=True)
                if descriptor is None:
                    continue
                held[path] = [descriptor, 0]
            held[path][1] += 1
            taken.append(path)
        yield
    finally:
        for path in reversed(taken):
            held[path][1] -= 1
            if not held[path][1]:
                _unlock(held.pop(path)[0])
                _remove_if_unheld(path)


_THIS_THREAD = threading.local()


def _held_here():
    """{lock file: [descriptor, times held]} of the shared locks this thread holds (``_kept_in_place``)."""
    if not hasattr(_THIS_THREAD, "shared"):
        _THIS_THREAD.shared = {}
    return _THIS_THREAD.shared


@contextlib.contextmanager
def one_version_of(folder):
    """``with one_version_of(d): <read d's files>`` -- a loader that reads several files of a folder (an adapter's
    config, then the weights it describes) reads them from one version of it: it holds the folder's shared lock
    (``_kept_in_place``), so another process's save swaps the folder before the first read or after the last,
    never between (a server loading an adapter that training saves meanwhile took the old adapter_config.json's
    lora_alpha with the new weights, silently). Not a folder (a Hub id, a missing one): nothing is held."""
    if not isinstance(folder, (str, os.PathLike)) or not os.path.isdir(folder):
        yield
        return
    with _kept_in_place(os.fspath(folder)):
        yield


def _locked_file(path, shared=False):
    """A descriptor of the file at ``path`` (created if missing) holding its exclusive lock (``shared``: its shared
    one), or None where there is no lock to take (no ``fcntl``, a folder that cannot be written: the save's own
    writes name it, a filesystem without locks). The lock counts only if ``path`` still names the locked file: a
    holder removes it when done."""
    try:
        import fcntl
    except ImportError:
        return None
    while True:
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)  # (read: another user's lock file locks too)
        except OSError:
            return None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(descriptor), os.stat(path)):
                return descriptor
        except FileNotFoundError:  # (removed by the save that held it: the next lock file is the one)
            pass
        except OSError:  # (ENOLCK, EOPNOTSUPP: a filesystem without locks)
            os.close(descriptor)
            return None
        except BaseException:  # (a Ctrl-C while waiting)
            os.close(descriptor)
            raise
        os.close(descriptor)


def _cannot_swap(directory, parent):
    """A folder that cannot be swapped for a sibling: a mount point (a container's volume, ``docker run -v
    $PWD/out:/out``: renaming it is EBUSY), one whose parent this process cannot write (no sibling there), or one a
    run is writing (``_held_by_a_run``)."""
    return os.path.isdir(directory) and (os.path.ismount(directory) or not os.access(parent, os.W_OK | os.X_OK)
                                         or _held_by_a_run(directory))


# The temporary folder of a save that replaces files one by one is made inside the folder it saves into:
# ".save.minilora-<pid>-x8a2.tmp", its leftovers found as those of a file named "save" there.
_IN_PLACE = "save"


@contextlib.contextmanager
def _files_replaced_one_by_one(directory, replaces):
    """``atomic_folder`` where the folder cannot be swapped: the new files go to a temporary folder inside it and
    are fsynced, then each replaces its old version in one ``os.replace``, and the old version's files that the
    new save did not write (matching ``replaces``) are removed. Each file is whole at every moment; a kill
    between two replacements leaves some new and some old (as transformers' and PEFT's saves always can); a
    Ctrl-C there lands once every file is replaced."""
    marker = os.path.join(directory, _IN_PLACE)
    remove_leftovers(marker)
    with _naming_the_target(directory, temporary=os.path.join(directory, _temp_prefix(marker))):
        tmp = tempfile.mkdtemp(dir=directory, prefix=_temp_prefix(marker), suffix=".tmp")
    try:
        with _writing(tmp), _naming_the_target(directory, tmp):
            yield tmp
            _fsync_tree(tmp)
            with _publishing(directory):
                _replace_each(tmp, directory, replaces)
    finally:
        _remove_tree(tmp)


def _remove_tree(tmp):
    """Delete a save's temporary folder whole: a Ctrl-C in the middle (the user stopping the program just as a save
    ends) left the rest of it, a hidden copy of the old model, until some later save of the same folder; it lands
    once the folder is gone."""
    with held_ctrl_c():
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_each(tmp, directory, replaces):
    """Each file of the folder ``tmp`` replaces its namesake in ``directory`` (one ``os.replace`` each), and the old
    files matching ``replaces`` that ``tmp`` did not hold are removed (an older save's shards, which the new weights
    replace). A Ctrl-C between two replacements would leave some new files and some old: it lands at the end."""
    written = set(os.listdir(tmp))
    with held_ctrl_c():
        _refuse_protected_files(directory, tmp)
        _move_files(tmp, directory)
        for entry in os.listdir(directory):
            stale = entry not in written and not _is_temporary(entry) and any(
                fnmatch.fnmatch(entry, pattern) for pattern in replaces)
            if stale and os.path.isfile(os.path.join(directory, entry)):
                os.remove(os.path.join(directory, entry))
    _fsync_dir(directory)


def _move_files(source, target):
    """Move every file under ``source`` to the same place under ``target``, each in one ``os.replace``."""
    for root, _dirs, files in os.walk(source):
        place = os.path.join(target, os.path.relpath(root, source))
        os.makedirs(place, exist_ok=True)
        for name in sorted(files):
            os.replace(os.path.join(root, name), os.path.join(place, name))
        _fsync_dir(place)


def _link_missing(old, new, replaces=(), _under="", copies=True):
    """Hard-link (or copy) into ``new`` every entry of ``old`` that ``new`` lacks, folders recursively.
    The old folder itself is not changed, so it stays whole until the swap. A pattern in ``replaces`` matches a
    top-level entry's name, or, holding a "/", an entry's path in the folder (``second/adapter_model.bin``).
    ``copies=False``: where a hard link cannot be made, nothing is copied: False is returned at once (else True)."""
    for entry in os.listdir(old):
        relative = os.path.join(_under, entry)
        if any(fnmatch.fnmatch(relative, pattern) for pattern in replaces if "/" in pattern or not _under) or \
                _is_temporary(entry):
            continue
        source, target = os.path.join(old, entry), os.path.join(new, entry)
        if os.path.isdir(source) and not os.path.islink(source):
            if not os.path.exists(target):
                os.mkdir(target)
            if os.path.isdir(target) and not _link_missing(source, target, replaces, relative, copies):
                return False
        elif not os.path.lexists(target):
            try:
                os.link(source, target, follow_symlinks=False)
            except OSError:  # a filesystem without hard links
                if not copies:
                    return False
                shutil.copy2(source, target, follow_symlinks=False)
    return True


def _unlinked(tmp, own):
    """Remove from the folder ``tmp`` the top-level entries ``_link_missing`` put there (those not in ``own``). A file
    it linked inside one of the save's own folders is the old file itself: replacing it by itself changes nothing."""
    for entry in os.listdir(tmp):
        if entry not in own:
            path = os.path.join(tmp, entry)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def _fsync_tree(folder):
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(root)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a, b):
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False if unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library older than glibc 2.28
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this filesystem cannot exchange
        return False
    raise OSError(errno, os.strerror(errno), a)


def _swap_in(tmp, directory):
    """Put folder ``tmp`` at ``directory``; afterwards ``tmp`` holds the old folder (if there was one)."""
    cwd = os.getcwd() if os.path.isdir(directory) else None
    if not os.path.exists(directory):
        os.rename(tmp, directory)
    elif not _exchange(tmp, directory):
        # Two renames: a kill between them leaves no ``directory`` but the ".old" beside it, which
        # the next save into this folder (``remove_leftovers``) puts back.
        old = tmp[:-len(".tmp")] + ".old"
        with held_ctrl_c():  # (a Ctrl-C between the renames would leave no folder there until the next save)
            os.rename(directory, old)
            try:
                os.rename(tmp, directory)
            except BaseException:  # (a full disk): the old folder goes back now, not at the next save
                os.rename(old, directory)
                raise
            try:
                os.rename(old, tmp)  # (removed with ``tmp`` by atomic_folder)
            except BaseException as exc:  # the new folder is in place: the save is done, its old copy to remove
                shutil.rmtree(old, ignore_errors=True)
                if not isinstance(exc, OSError):
                    raise
    _fsync_dir(os.path.dirname(directory))
    if cwd == directory:  # we replaced the working directory: follow it to the new folder
        os.chdir(directory)


def sorted_keys(obj, keep_order=frozenset()):
    """``obj`` with every dict's keys sorted, as ``json.dumps(sort_keys=True)`` writes them, except the dicts
    stored under a key in ``keep_order``, whose order means something (PEFT 0.22's rank_pattern: the first
    matching key wins)."""
    if isinstance(obj, dict):
        return {key: value if key in keep_order else sorted_keys(value, keep_order)
                for key, value in sorted(obj.items())}
    if isinstance(obj, (list, tuple)):
        return [sorted_keys(value, keep_order) for value in obj]
    return obj


def save_json(obj, path, keep_order=frozenset()):
    """Write ``obj`` as indented JSON with sorted keys (but ``keep_order``'s dicts: ``sorted_keys``), atomically."""
    with atomic_write(path, "w") as f:
        json.dump(sorted_keys(obj, keep_order), f, indent=2)
        f.write("\n")


@contextlib.contextmanager
def naming_the_file(file):
    """A value a JSON file holds refused (config.json's num_hidden_layers: -16): the error names the file, as
    transformers' errors about a config file do (the field alone could come from any of a model's files)."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        if exc.args and isinstance(exc.args[0], str) and file not in exc.args[0]:
            exc.args = (f"{file}: {exc.args[0]}",) + exc.args[1:]
        raise


def load_json(path):
    """Read a JSON file; a syntax error names the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        kind = other_format(exc.doc[:64].encode("utf-8", "replace"))  # (a Git LFS pointer, a web page)
        raise InvalidJSONError(f"{path}: not valid JSON ({f'it is {kind}' if kind else exc})") from None
    except UnicodeDecodeError as exc:  # JSON files are UTF-8 (RFC 8259); say which file is not
        raise InvalidJSONError(f"{path}: not valid JSON (not UTF-8 text: byte {exc.start} is "
                               f"{exc.object[exc.start:exc.start + 1]!r})") from None


# --------------------------------------------------------------------------------------------------
# Single safetensors files
# --------------------------------------------------------------------------------------------------
def read_header(path):
    """The parsed JSON header of a safetensors file and the byte offset where tensor data starts.

    Checks everything that can be checked without reading the data: the file is long enough for its
    header and for every tensor's byte range, dtypes are known, and each byte range fits its shape.
    """
    path = os.fspath(path)
    if os.path.isdir(path):  # (not "no such file": the folder is there, the file name is missing)
        raise IsADirectoryError(f"{path} is a folder, not a safetensors file: pass the file in it (e.g. "
                                f"{os.path.join(path, SAFE_WEIGHTS_NAME)}), or load the folder with from_pretrained")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: truncated or not a safetensors file ({size} bytes, "
                                  "shorter than the 8-byte header length)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > size - 8:
            f.seek(0)
            _refuse_other_format(path, f.read(64))
            raise CheckpointError(f"{path}: truncated or not a safetensors file (the header claims "
                                  f"{header_len} bytes, but only {size - 8} follow its 8-byte length)")
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_without_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, _DuplicateKey) as exc:
        raise CheckpointError(f"{path}: corrupted safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted safetensors header (not a JSON object)")
    if "__metadata__" in header and header["__metadata__"] is None:  # (JSON's null: safetensors reads no metadata)
        del header["__metadata__"]
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: corrupted safetensors header (__metadata__ must map names to "
                              f"strings, got {metadata!r})")
    data_start, data_len = 8 + header_len, size - 8 - header_len
    spans = sorted((_check_entry(path, name, info, data_len), name)
                   for name, info in header.items() if name != "__metadata__")
    _check_spans(path, spans, data_len)
    return header, data_start


def other_format(start):
    """What a file starting with the bytes ``start`` (its first 64 bytes say the most) is when it is not
    safetensors: a zip (torch.save's pickles), a pickle, a Git LFS pointer, a web page, a GGUF file; or None."""
    if start.startswith(b"PK\x03\x04"):
        return "a zip archive (torch.save writes its pickles in one; numpy.savez its arrays)"
    if start[:1] == b"\x80" and start[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle (what torch.save wrote before torch 1.6, or pickle.dump)"
    if start.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file itself: the repository was cloned without its large files (run " \
            "`git lfs pull`)"
    if start.lstrip()[:14].lower() in (b"<!doctype html", b"<html>") or start.lstrip()[:6].lower() == b"<html ":
        return "a web page (a download that saved the page instead of the file? use the file's 'resolve' link)"
    if start.startswith(b"GGUF"):
        return "a GGUF file (llama.cpp's format)"
    if start.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file (decompress it first)"
    return None


def binary_file_kind(start):
    """``other_format``, and for a reader of a binary format (safetensors, a torch.save or training checkpoint)
    also JSON or plain text: such a file read as binary would be "truncated" by the length its first bytes
    spell. (Not in ``other_format``: a JSON reader calls that on its own malformed JSON.)"""
    kind = other_format(start)
    if kind is not None:
        return kind
    try:
        text = start.decode("utf-8")
    except UnicodeDecodeError as exc:  # (64 bytes may end inside a character: judge the whole ones)
        text = start[:exc.start].decode("utf-8") if exc.start >= len(start) - 3 else None
    if not text or not all(c.isprintable() or c in "\t\n\r" for c in text):
        return None
    if text.lstrip()[:1] in ("{", "["):
        return f"a JSON text file (it starts {text.strip()[:40]!r})"
    return f"a text file (it starts {text.strip()[:40]!r})"


def _refuse_other_format(path, start):
    kind = binary_file_kind(start)
    if kind is not None and "pickle" in kind:
        raise CheckpointError(f"{path} is not a safetensors file: it is {kind}. minilora reads safetensors files "
                              f"only and never unpickles (unpickling can run any code the file contains). Convert "
                              f"it where torch is installed: safetensors.torch.save_file(torch.load(path), "
                              f"'model.safetensors')")
    if kind is not None:
        raise CheckpointError(f"{path} is not a safetensors file: it is {kind}")


class _DuplicateKey(ValueError):
    pass


def _without_duplicates(pairs):
    """A JSON object whose keys are all different. No writer puts a tensor twice in a header; JSON readers
    keep the last entry (the safetensors library too), so a corrupted header with two entries of one name
    would load one of them in silence."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({key for key in keys if keys.count(key) > 1})
        raise _DuplicateKey(f"{', '.join(map(repr, twice[:3]))} appear(s) twice in the header")
    return dict(pairs)


def _check_entry(path, name, info, data_len):
    """Check one tensor's header entry (for every dtype, BF16 included); return its byte span."""
    try:
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: corrupted safetensors header (bad entry for '{name}': "
                              f"{info!r})") from None
    if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
        raise CheckpointError(f"{path}: tensor '{name}' has dtype {dtype}, which minilora cannot "
                              f"read (supported: {', '.join(sorted(_ITEMSIZE))})")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise CheckpointError(f"{path}: corrupted header: tensor '{name}' has shape {shape!r} "
                              "(expected a list of non-negative integers)")
    if not (_is_count(begin) and _is_count(end)):
        raise CheckpointError(f"{path}: corrupted header: tensor '{name}' has data_offsets "
                              f"{info['data_offsets']!r} (expected two non-negative integers)")
    if end > data_len:
        raise CheckpointError(f"{path}: truncated file: tensor '{name}' needs data bytes up to "
                              f"{end} but only {data_len} are present")
    expected = 1  # Python integers: a shape whose product overflows 64 bits cannot wrap around
    for n in shape:
        expected *= n
    expected *= _ITEMSIZE[dtype]
    if begin > end or end - begin != expected:
        raise CheckpointError(f"{path}: corrupted header: tensor '{name}' ({dtype}, shape {shape}) "
                              f"should span {expected} bytes, its offsets [{begin}, {end}) do not")
    return begin, end


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_spans(path, spans, data_len):
    """The tensors' byte ranges must tile the data section exactly, as the safetensors library
    requires: no overlap (two tensors sharing bytes), no gap, nothing after the last one."""
    position = 0
    for (begin, end), name in spans:
        if begin != position:
            kind = "overlaps the previous tensor" if begin < position else f"leaves a gap at byte {position}"
            raise CheckpointError(f"{path}: corrupted header: tensor '{name}' at [{begin}, {end}) {kind}")
        position = end
    if position != data_len:
        raise CheckpointError(f"{path}: corrupted file: the tensors end at data byte {position} but the "
                              f"file has {data_len} data bytes")


def load_file(path):
    """``{name: numpy array}`` of a safetensors file. BF16 tensors come back as bfloat16 arrays
    (float32 where ml_dtypes is not installed)."""
    header, data_start = read_header(path)
    dtypes = {info["dtype"] for name, info in header.items() if name != "__metadata__"}
    try:
        from safetensors.numpy import load_file as _st_load
    except ImportError:
        _st_load = None
    if _st_load is not None and "BF16" not in dtypes:
        try:
            return _st_load(path)
        except Exception as exc:  # the header passed our checks, so this is a deeper corruption
            raise CheckpointError(f"{path}: could not be read by safetensors ({exc})") from None
    return _load_from_header(path, header, data_start)


def _is_torch_weights(path):
    """A weights file torch.save wrote (``pytorch_model.bin``): any name but ``.safetensors`` (a torch file named
    so is refused as not what its name says, as the safetensors library refuses it)."""
    return not os.fspath(path).endswith(".safetensors") and torch_format.kind(path) in ("zip", "legacy")


def load_weights(path):
    """``{name: numpy array}`` of a weights file: safetensors (``load_file``), or torch.save's state dict
    (``pytorch_model.bin``, ``adapter_model.bin``), read as torch.load(weights_only=True) reads it: never
    unpickled (minilora/torch_format.py)."""
    return load_file(path) if not _is_torch_weights(path) else _torch_state(path, values=True)


def read_weights_header(path):
    """``read_header``'s ``{name: {"dtype", "shape"}}`` of either kind of weights file (a torch file's pickle
    alone is read: no tensor values)."""
    if not _is_torch_weights(path):
        return read_header(path)[0]
    header = {}
    for name, array in _torch_state(path, values=False).items():
        if _code(array.dtype) is None:
            raise CheckpointError(f"{path}: tensor {name!r} is {array.dtype}, which a checkpoint of weights "
                                  f"does not hold")
        header[name] = {"dtype": _code(array.dtype), "shape": list(array.shape)}
    return header


def _torch_state(path, values):
    import pickle
    try:
        state = torch_format.read(os.fspath(path), values=values)
    except (RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict ({{name: tensor}}) of "
                              "weights")
    return dict(state)


def _load_from_header(path, header, data_start):
    """Read every tensor straight from its byte range (used for bfloat16, which the safetensors
    package's NumPy API does not know, or without safetensors)."""
    with open(path, "rb") as f:
        f.seek(data_start)
        blob = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if info["dtype"] == "BF16":
            # The 16 bits as little-endian integers, then as bfloat16 (a view: ml_dtypes' dtype has no
            # byte-swapped variant). Without ml_dtypes: bfloat16 is the top half of a float32, so
            # widen the 16 bits and shift them into place.
            bits = np.frombuffer(blob, np.dtype("<u2"), (end - begin) // 2, begin).astype(np.uint16)
            bf16 = bfloat16_if_installed() if HAS_BFLOAT16 else None
            array = bits.view(bf16) if bf16 is not None else (bits.astype(np.uint32) << 16).view(np.float32)
        else:
            dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
            array = np.frombuffer(blob, dtype, (end - begin) // dtype.itemsize, begin)
            array = array.astype(dtype.newbyteorder("="))  # a writable native-endian copy
        out[name] = array.reshape(info["shape"])
    return out


def save_file(tensors, path, metadata=None):
    """Write ``{name: array}`` to ``path`` as safetensors, atomically, with NumPy alone.

    The format is small enough to write by hand: an 8-byte little-endian header length, a JSON
    header ``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}`` (padded with spaces
    to a multiple of 8 bytes), then every tensor's little-endian bytes back to back. Metadata
    defaults to ``{"format": "pt"}`` (transformers refuses safetensors files without it).
    """
    meta = {"format": "pt"} if metadata is None else {str(k): str(v) for k, v in metadata.items()}
    arrays = {name: np.asarray(_host(t), order="C") for name, t in tensors.items()}
    header, chunks, offset = {"__metadata__": meta}, [], 0
    # The order of safetensors' own writer (widest dtype first, then by name): identical bytes.
    for name in sorted(arrays, key=lambda n: (-arrays[n].dtype.itemsize, n)):
        array = arrays[name]
        code = _code(array.dtype)
        if code is None:
            supported = [str(dtype) for dtype in _CODES] + (["bfloat16"] if HAS_BFLOAT16 else [])
            raise TypeError(f"save_file: tensor '{name}' has dtype {array.dtype}, which safetensors "
                            f"cannot store (supported: {', '.join(sorted(supported))})")
        data = _little_endian_bytes(array)
        header[name] = {"dtype": code, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the tensor data 8-byte aligned
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in chunks:
            f.write(data)


def _little_endian_bytes(array):
    """The array's bytes in little-endian order, as safetensors stores them."""
    if is_bfloat16(array.dtype):  # through its 16 bits: ml_dtypes' bfloat16 cannot change byte order
        return array.view(np.uint16).astype("<u2", copy=False).tobytes()
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def non_finite_names(tensors):
    """Names of the floating-point arrays in ``{name: array}`` that hold a NaN or an infinity."""
    return [name for name, t in tensors.items()
            if _is_float(np.asarray(_host(t)).dtype) and not np.isfinite(_host(t)).all()]


def _is_float(dtype):
    """Floating or complex (bfloat16 included, which NumPy files under kind 'V')."""
    return dtype.kind == "c" or is_floating(dtype)


def warn_non_finite(tensors, source):
    """Warn, naming the tensors, when loaded weights hold NaN or infinity. PEFT and torch.load load them
    without a word, and every output computed from them is NaN: the file was most likely saved from a
    run that had diverged. A warning, not an error, so such a file can still be opened and inspected."""
    bad = non_finite_names(tensors)
    if bad:
        import warnings
        more = f" and {len(bad) - 1} more tensor(s)" if len(bad) > 1 else ""
        warnings.warn(f"{source}: {bad[0]!r}{more} hold NaN or infinite values; everything computed from them "
                      "will be NaN (was it saved from a training run that diverged?)", stacklevel=3)
    return bad


def _host(t):
    """A NumPy array from a minilora Tensor, a CuPy array or a NumPy array."""
    if hasattr(t, "numpy") and not isinstance(t, np.ndarray):
        return t.numpy(force=True)
    return t if isinstance(t, (np.ndarray, np.generic)) else t.get()


# --------------------------------------------------------------------------------------------------
# Checkpoint folders (single file or sharded)
# --------------------------------------------------------------------------------------------------
_READ_ATTEMPTS = 3


def load_checkpoint(directory, safetensors=True):
    """All tensors of a Hugging Face-style folder: ``model.safetensors``, or the shards listed in
    ``model.safetensors.index.json`` (``safetensors=False``: torch.save's files only, as transformers'
    ``use_safetensors=False``). A save that swaps the folder while its shards are read (another process's: a
    training job saving the model that this one loads) gave some shards of each version, a model of both: the
    folder is read again, whole (``CheckpointError`` after three such saves in a row)."""
    for _ in range(_READ_ATTEMPTS):
        version = _folder_version(directory)
        tensors = _load_checkpoint_once(directory, safetensors)
        if _folder_version(directory) == version:
            return tensors
    raise CheckpointError(f"{directory}: replaced by another save while it was read, {_READ_ATTEMPTS} times in a "
                          "row; load it when the process saving there is done")


def _folder_version(directory):
    """What changes when a save swaps ``directory`` (its inode, and its ctime: a new folder may get an old one's
    inode number), or None if it cannot be told."""
    try:
        status = os.stat(directory)
    except OSError:
        return None
    return status.st_dev, status.st_ino, status.st_ctime_ns


def _load_checkpoint_once(directory, safetensors):
    tensors = {}
    for path in checkpoint_files(directory, safetensors):
        tensors.update(load_weights(path))
    weight_map, index = _weight_map(directory, safetensors)
    if weight_map is not None:
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise CheckpointError(f"{index}: {len(missing)} tensors listed in the index are in no "
                                  f"shard: {', '.join(missing[:8])}")
    return tensors


def read_checkpoint_shapes(directory, safetensors=True):
    """``{name: shape}`` of every tensor in a checkpoint folder, from the file headers alone: a
    loader can compare them with the model it is about to build before reading (or allocating) any
    weights."""
    shapes = {}
    for path in checkpoint_files(directory, safetensors):
        header = read_weights_header(path)
        shapes.update({name: tuple(info["shape"]) for name, info in header.items() if name != "__metadata__"})
    return shapes


def _layout(directory, safetensors=True):
    """The folder's weights, in transformers' order of preference: ``(single file, None)`` or ``(None, index)``
    for safetensors (unless ``safetensors=False``), else for torch.save's ``pytorch_model.bin``; ``(None, None)``
    when it has none."""
    formats = ((SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME),) if safetensors else ()
    for single, index in (*formats, (WEIGHTS_NAME, WEIGHTS_INDEX_NAME)):
        for found in (os.path.join(directory, single), None), (None, os.path.join(directory, index)):
            if os.path.isfile(found[0] or found[1]):
                return found
    return None, None


def _weight_map(directory, safetensors=True):
    """The index's ``weight_map`` and the index path, or ``(None, None)`` for a single-file folder."""
    directory = os.fspath(directory)
    single, index = _layout(directory, safetensors)
    if index is None:
        return None, None
    content = load_json(index)
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: has no 'weight_map' object of tensor name -> shard file")
    return weight_map, index


def checkpoint_files(directory, safetensors=True):
    """The weights files of a checkpoint folder: ``model.safetensors`` or the index's shards, else (as
    transformers) torch.save's ``pytorch_model.bin`` or its index's shards (only those: ``safetensors=False``).

    A shard must lie inside the folder: an index naming ``../other/x.safetensors`` or an absolute
    path is refused (loading a folder must never read files elsewhere)."""
    directory = os.fspath(directory)
    single, _ = _layout(directory, safetensors)
    if single is not None:
        return [single]
    weight_map, index = _weight_map(directory, safetensors)
    if weight_map is not None:
        paths = []
        for shard in sorted(set(weight_map.values())):
            parts = shard.replace("\\", "/").split("/")
            if os.path.isabs(shard) or ".." in parts or not shard.strip():
                raise CheckpointError(f"{index} names shard {shard!r}, which is outside the model "
                                      "folder; shards must be files inside it")
            shard_path = os.path.join(directory, shard)
            if not os.path.isfile(shard_path):
                raise MissingShardError(f"{index} lists shard '{shard}', but {shard_path} does not exist")
            paths.append(shard_path)
        return paths
    found = sorted(os.listdir(directory)) if os.path.isdir(directory) else None
    if found is None:
        raise FileNotFoundError(f"checkpoint folder not found: {directory}")
    raise FileNotFoundError(f"no {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME}, {WEIGHTS_NAME} or "
                            f"{WEIGHTS_INDEX_NAME} in {directory}; it holds: {', '.join(found) or 'nothing'}")
